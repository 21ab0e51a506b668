"""`batchfleet run` and `validate` for a pipeline YAML (`type: pipeline`)."""

from __future__ import annotations

import argparse
import sys

from common.errors import JobFailed, UsageError


def cmd_run_pipeline(ns: argparse.Namespace) -> int:
    from batchfleet.commands.common import broker_url, open_broker_from
    from batchfleet.commands.run import data_map, fleet_key, run_options
    from coordinator.pipeline.load import load_pipeline
    from coordinator.pipeline.run import StepReport, run_pipeline
    from coordinator.spec.args import collect_overrides, parse_bindings

    if ns.detach or ns.resume:
        raise UsageError("--detach and --resume take one parallel job, not a pipeline", "run the pipeline in full")
    pipeline = load_pipeline(ns.spec)
    inputs, outputs = parse_bindings(ns.input, "input"), parse_bindings(ns.output, "output")
    overrides = collect_overrides(ns, ns.set)
    note_unused(pipeline.unused)

    def printed(step: StepReport) -> None:
        print(step.line or f"step {step.name} ({step.kind}) {step.state}: {step.reason}", flush=True)

    key = fleet_key(ns)
    broker = open_broker_from(ns)
    try:
        mode = "on the fleet" if broker_url(ns) else "embedded"
        print(f"pipeline {pipeline.name}: {len(pipeline.steps)} steps {mode}", file=sys.stderr)
        options = run_options(ns, broker, key)
        report = run_pipeline(pipeline, inputs, outputs, overrides, options, printed, data_map(ns))
    finally:
        broker.close()
    failed = [step for step in report.steps if step.state == "failed"]
    print(f"pipeline {report.job_id} {report.state}: " + ", ".join(f"{s.name} {s.state}" for s in report.steps))
    if failed:
        first = failed[0]
        raise JobFailed(
            f"pipeline {report.job_id} failed: step {first.name} {first.state}: {first.reason}",
            f"see {first.logs}" if first.logs else None,
        )
    return 0


def cmd_validate_pipeline(ns: argparse.Namespace) -> int:
    from coordinator.pipeline.load import load_pipeline

    pipeline = load_pipeline(ns.spec)
    order = " -> ".join(f"{step.name} ({step.kind})" for step in pipeline.steps)
    print(f"{ns.spec}: ok (pipeline, steps {order})")
    note_unused(pipeline.unused)
    return 0


def note_unused(keys: list[str]) -> None:
    if keys:
        print(f"note: not used here (they matter only on Azure ML): {', '.join(keys)}", file=sys.stderr)
