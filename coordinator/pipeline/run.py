"""Run a pipeline: its steps in dependency order on one store, each parallel step as a batchfleet
job (embedded or on the fleet) and each command step once in a child process; a summary at the end."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import BatchfleetError, SpecError, UsageError
from common.settings import DEFAULT_APPEND_FILE
from common.storage import join_uri, open_storage
from coordinator.pipeline.command import code_folder, parse_command, run_command
from coordinator.pipeline.load import _PARENT_JOB, _PARENT_PORT, EXPRESSION, Pipeline, Step
from coordinator.plan.submit import new_job_id
from coordinator.runner import RunOptions, run_job
from coordinator.spec.args import Binding
from coordinator.spec.datastores import DataMap
from coordinator.spec.loader import located, resolve, spec_from_doc
from coordinator.spec.validation import RawPort

log = logging.getLogger(__name__)


@dataclass
class StepReport:
    name: str
    kind: str
    state: str  # succeeded | failed | skipped
    reason: str | None = None
    seconds: float = 0.0
    job_id: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    logs: str | None = None
    line: str = ""  # what the step printed as its closing line


@dataclass
class PipelineReport:
    job_id: str
    name: str
    state: str
    steps: list[StepReport]
    started: float
    finished: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What ${{...}} expressions resolve to while the pipeline runs."""

    pipeline: Pipeline
    job_id: str
    area: str  # <store>/<pipeline job id>: default output locations and the summary
    inputs: dict[str, Binding]
    input_types: dict[str, RawPort]
    outputs: dict[str, str]
    step_outputs: dict[tuple[str, str], str] = field(default_factory=dict)
    step_output_types: dict[tuple[str, str], RawPort] = field(default_factory=dict)

    def fill(self, text: str, output_name: str = "") -> str:
        def one(match: Any) -> str:
            inner = match.group(1)
            job, port = _PARENT_JOB.fullmatch(inner), _PARENT_PORT.fullmatch(inner)
            if inner == "name":
                return self.job_id
            if inner == "default_datastore":
                return self.pipeline.default_datastore or "workspaceblobstore"
            if inner == "output_name":
                return output_name
            if job is not None:
                if (job.group(1), job.group(2)) not in self.step_outputs:
                    raise SpecError(f"{self.pipeline.path.name}: step {job.group(1)} has no output {job.group(2)!r}")
                return self.step_outputs[(job.group(1), job.group(2))]
            assert port is not None  # load_pipeline checked every expression
            if port.group(1) == "inputs":
                if port.group(2) not in self.inputs:
                    name = port.group(2)
                    raise UsageError(f"pipeline input '{name}' is not bound", f"pass --input {name}=PATH")
                return self.inputs[port.group(2)].path
            return self.outputs[port.group(2)]

        return EXPRESSION.sub(one, text)

    def source_type(self, text: str) -> RawPort | None:
        """The declared port behind a binding that is exactly one expression."""
        match = EXPRESSION.fullmatch(text.strip())
        if match is None:
            return None
        job, port = _PARENT_JOB.fullmatch(match.group(1)), _PARENT_PORT.fullmatch(match.group(1))
        if job is not None:
            return self.step_output_types.get((job.group(1), job.group(2)))
        if port is not None and port.group(1) == "inputs":
            return self.input_types.get(port.group(2))
        return None


def pipeline_context(
    pipeline: Pipeline,
    inputs: Mapping[str, Binding],
    outputs: Mapping[str, Binding],
    store_uri: str,
    locate: Callable[[str, Path], str] = located,
) -> Context:
    """Bind the pipeline's own inputs and outputs: the command line first, then the YAML."""
    for names, declared, what in (
        (list(inputs), pipeline.inputs, "input"),
        (list(outputs), pipeline.outputs, "output"),
    ):
        for name in names:
            if name not in declared:
                known = ", ".join(declared) or "none"
                raise UsageError(f"--{what} {name}: the pipeline declares no {what} '{name}' (declared: {known})")
    job_id = new_job_id(pipeline.name)
    area = join_uri(store_uri, job_id)
    folder = pipeline.path.parent
    bound: dict[str, Binding] = {}
    types: dict[str, RawPort] = {}
    for name, raw in pipeline.inputs.items():
        port = RawPort.model_validate(raw)
        types[name] = port
        if name in inputs:
            given = inputs[name]
            path = given.path if _is_value(port) else locate(given.path, Path.cwd())
            bound[name] = Binding(name=name, path=path, kind=given.kind, mode=given.mode)
        elif port.path is not None:
            bound[name] = Binding(name=name, path=locate(port.path, folder))
        elif port.default is not None:
            value = port.default
            bound[name] = Binding(name=name, path=str(value) if _is_value(port) else locate(str(value), folder))
    ctx = Context(pipeline, job_id, area, bound, types, {})
    for name, raw in pipeline.outputs.items():
        port = RawPort.model_validate(raw)
        if name in outputs:
            ctx.outputs[name] = locate(outputs[name].path, Path.cwd())
        elif port.path is not None:
            ctx.outputs[name] = locate(ctx.fill(port.path, name), folder)  # ${{name}}, ${{default_datastore}}
        else:
            ctx.outputs[name] = join_uri(area, "outputs", name)
    return ctx


def _is_value(port: RawPort) -> bool:
    return port.type.lower() in {"string", "str", "integer", "int", "number", "float", "boolean", "bool", "enum"}


def step_bindings(
    ctx: Context, step: Step, locate: Callable[[str, Path], str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The step's inputs (name -> value or location) and outputs (name -> location), filled in."""
    base = ctx.pipeline.path.parent
    doc_inputs: dict[str, Any] = step.doc.setdefault("inputs", {}) or {}
    step.doc["inputs"] = doc_inputs
    inputs: dict[str, Any] = {}
    for name, value in step.inputs.items():
        if isinstance(value, dict):
            inputs[name] = locate(ctx.fill(str(value["path"])), base)
        elif isinstance(value, str) and EXPRESSION.search(value):
            source = ctx.source_type(value)
            if doc_inputs.get(name) is None:  # an inline port declared only by its binding
                doc_inputs[name] = source.model_dump(include={"type", "mode"}) if source else {"type": "uri_folder"}
            inputs[name] = ctx.fill(value)
        else:
            inputs[name] = value  # a literal value
    outputs: dict[str, str] = {}
    declared_out: dict[str, Any] = step.doc.setdefault("outputs", {}) or {}
    step.doc["outputs"] = declared_out
    for name in declared_out:
        port = RawPort.model_validate(declared_out[name])
        given = step.outputs.get(name)
        if isinstance(given, dict):
            place = locate(ctx.fill(str(given["path"]), name), base)
        elif isinstance(given, str):
            place = ctx.fill(given, name)
        else:
            place = join_uri(ctx.area, step.name, name)
            if port.type.lower() == "uri_file":
                place = join_uri(place, DEFAULT_APPEND_FILE if step.kind == "parallel" else name)
        outputs[name] = place
        ctx.step_outputs[(step.name, name)] = place
        ctx.step_output_types[(step.name, name)] = port
    for name in step.outputs:
        if name not in declared_out:
            raise SpecError(
                f"{ctx.pipeline.path.name}: jobs.{step.name}.outputs.{name}: the step declares no such output"
            )
    return inputs, outputs


def run_pipeline(
    pipeline: Pipeline,
    inputs: Mapping[str, Binding],
    outputs: Mapping[str, Binding],
    overrides: Mapping[str, object],
    options: RunOptions,
    on_step: Callable[[StepReport], None] | None = None,
    data: DataMap | None = None,
) -> PipelineReport:
    """Every step in order; after a failed step the rest are skipped (unless continue_on_step_failure)."""
    data = data or DataMap()

    def locate(text: str, base: Path) -> str:
        return data.locate(located(text, base), text)

    ctx = pipeline_context(pipeline, inputs, outputs, options.store_uri, locate)
    report = PipelineReport(ctx.job_id, pipeline.name, "running", [], time.time(), outputs=ctx.outputs)
    report.unused = pipeline.unused
    failed: set[str] = set()
    for step in pipeline.steps:
        if step.after & failed:
            done = StepReport(step.name, step.kind, "skipped", f"needs {', '.join(sorted(step.after & failed))}")
        else:
            try:
                done = _run_step(ctx, step, overrides, options, locate, data)
            except BatchfleetError as exc:  # refused before it ran (bad input, bad binding): it failed
                done = StepReport(step.name, step.kind, "failed", exc.line(), line=f"step {step.name}: {exc.line()}")
        report.steps.append(done)
        if done.state != "succeeded":
            failed.add(step.name)
        if on_step is not None:
            on_step(done)
        if failed and not pipeline.continue_on_step_failure:
            for rest in pipeline.steps[len(report.steps) :]:
                report.steps.append(StepReport(rest.name, rest.kind, "skipped", f"step {step.name} {done.state}"))
            break
    report.state = "failed" if failed else "succeeded"
    report.finished = time.time()
    write_summary(report, options)
    return report


def _run_step(
    ctx: Context,
    step: Step,
    overrides: Mapping[str, object],
    options: RunOptions,
    locate: Callable[[str, Path], str],
    data: DataMap,
) -> StepReport:
    started = time.time()
    inputs, outputs = step_bindings(ctx, step, locate)
    where = f"{ctx.pipeline.path.name}: jobs.{step.name}"
    if step.kind == "command":
        doc = parse_command(step.doc, where)
        bound = {name: str(value) for name, value in inputs.items()}
        unknown = set(bound) - set(doc.inputs)
        if unknown:
            raise SpecError(f"{where}: binds input {sorted(unknown)[0]!r}, which the command does not declare")
        logs = join_uri(ctx.area, step.name, "logs", "std_log.txt")
        result = run_command(doc, code_folder(doc, step.source, where), bound, outputs, logs, options.storage_options)
        line = f"step {step.name} (command) {result.state} in {result.seconds:.1f}s; log {logs}"
        return StepReport(step.name, "command", result.state, result.reason, result.seconds, None, outputs, logs, line)
    spec = spec_from_doc(step.doc, step.source)
    given_in = {name: Binding(name=name, path=str(value)) for name, value in inputs.items()}
    given_out = {name: Binding(name=name, path=place) for name, place in outputs.items()}
    resolved = resolve(spec, given_in, given_out, overrides, data)
    summary = run_job(spec, resolved, options)
    where_out = f"; output {summary.output} ({summary.rows} rows)" if summary.output else ""
    line = (
        f"step {step.name} (parallel, job {summary.job_id}) {summary.state}: "
        f"{summary.batches_committed}/{summary.batches_total} mini-batches, "
        f"{summary.items_succeeded} items succeeded, {summary.items_failed} failed{where_out}"
    )
    return StepReport(
        step.name, "parallel", summary.state, summary.reason, time.time() - started, summary.job_id,
        outputs, join_uri(resolved.output_uri, "logs"), line,
    )  # fmt: skip


def summary_text(report: PipelineReport) -> str:
    lines = [f"Pipeline {report.name} ({report.job_id}) {report.state} in {report.finished - report.started:.1f}s."]
    for step in report.steps:
        why = f": {step.reason}" if step.reason and step.state != "succeeded" else ""
        job = f" job {step.job_id}" if step.job_id else ""
        lines.append(
            f"  {step.name} ({step.kind}{job}) {step.state}{why}" + (f"; logs {step.logs}" if step.logs else "")
        )
    for name, place in report.outputs.items():
        lines.append(f"  output {name}: {place}")
    if report.unused:
        lines.append(f"  not used here (Azure ML only): {', '.join(report.unused)}")
    return "\n".join(lines) + "\n"


def write_summary(report: PipelineReport, options: RunOptions) -> None:
    area = join_uri(options.store_uri, report.job_id)
    storage = open_storage(area, options.storage_options)
    storage.write_bytes(join_uri(area, "pipeline.json"), json.dumps(asdict(report), indent=2).encode())
    storage.write_bytes(join_uri(area, "pipeline_summary.txt"), summary_text(report).encode())
