"""`batchfleet run` and `batchfleet validate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchfleet.commands.common import (
    add_connection_flags,
    add_log_flag,
    broker_url,
    open_broker_from,
    storage_options,
    store_uri,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from common.args import add_setting_flags

    run = sub.add_parser("run", help="run a component (embedded, or on a fleet with --broker)")
    add_spec_flags(run)
    add_connection_flags(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    run.add_argument("--detach", action="store_true", help="fleet mode: submit, follow in the background")
    add_setting_flags(run)
    add_log_flag(run)
    run.set_defaults(handler=cmd_run)
    validate = sub.add_parser("validate", help="check a spec (and bindings, if given) without running")
    add_spec_flags(validate)
    add_setting_flags(validate)
    add_log_flag(validate)
    validate.set_defaults(handler=cmd_validate)


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="ParallelComponent YAML or Azure ML v2 parallel job YAML")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="NAME=PATH[:tabular|:direct]")
    parser.add_argument("--output", "-o", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run setting")


def resolve_from(ns: argparse.Namespace):  # type: ignore[no-untyped-def]
    from common.args import collect_overrides
    from common.spec import load_spec, parse_bindings, resolve

    spec = load_spec(ns.spec)
    overrides = collect_overrides(ns, ns.set)
    resolved = resolve(spec, parse_bindings(ns.input, "input"), parse_bindings(ns.output, "output"), overrides)
    return spec, resolved


def cmd_validate(ns: argparse.Namespace) -> int:
    spec, resolved = resolve_from(ns) if (ns.input or ns.output) else (None, None)
    if spec is None:
        from common.spec import load_spec

        spec = load_spec(ns.spec)
    detail = f", {len(resolved.args)} args" if resolved is not None else ""
    print(f"{ns.spec}: ok ({spec.kind}, entry {spec.entry_script}{detail})")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from common.errors import JobFailed
    from coordinator.runner import RunOptions, run_job

    spec, resolved = resolve_from(ns)
    broker = open_broker_from(ns)
    options = RunOptions(
        store_uri=store_uri(ns), broker=broker, embedded=broker_url(ns) is None,
        storage_options=storage_options(ns), progress=not ns.no_progress,
    )  # fmt: skip
    try:
        summary = run_job(spec, resolved, options)
    finally:
        broker.close()
    where = f"; output {summary.output} ({summary.rows} rows)" if summary.output else ""
    print(
        f"job {summary.job_id} {summary.state}: {summary.batches_committed}/{summary.batches_total} mini-batches, "
        f"{summary.items_succeeded} items succeeded, {summary.items_failed} failed{where}"
    )
    if summary.state != "succeeded":
        raise JobFailed(f"job {summary.job_id} {summary.state}: {summary.reason}",
                        f"see {resolved.output_uri}/logs/job_result.txt")  # fmt: skip
    return 0
