"""A pipeline YAML -> its steps in dependency order, each a parallel or command job with bindings."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from common.errors import SpecError
from coordinator.pipeline.command import CommandDoc
from coordinator.spec.loader import spec_from_doc
from coordinator.spec.validation import Section, V2JobDoc, azure_only, parse_section, read_mapping

EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
_PARENT_JOB = re.compile(r"parent\.jobs\.([\w-]+)\.outputs\.([\w-]+)")
_PARENT_PORT = re.compile(r"parent\.(inputs|outputs)\.([\w-]+)")
_GLOBALS = {"name", "default_datastore", "output_name"}
# Keys of a step that bind or place it, never merged into its component.
_STEP_ONLY = {"type", "component", "inputs", "outputs", "compute", "display_name", "description", "tags"}
_MERGED = {"resources", "retry_settings", "limits", "environment_variables"}  # merged key by key


class PipelineSettings(Section):
    default_compute: str | None = None
    default_datastore: str | None = None
    continue_on_step_failure: bool = False
    force_rerun: bool | None = None
    default_environment: str | None = None


class PipelineDoc(Section):
    """`type: pipeline` (Azure ML CLI v2 pipeline job YAML)."""

    schema_: str | None = Field(default=None, alias="$schema")
    type: Literal["pipeline"]
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    experiment_name: str | None = None
    tags: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    settings: PipelineSettings = PipelineSettings()
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    jobs: dict[str, dict[str, Any]]


@dataclass
class Step:
    """One job of the pipeline: its own YAML (a component or the inline job) and how it is bound."""

    name: str
    kind: Literal["parallel", "command"]
    doc: dict[str, Any]
    source: Path  # the file `doc` came from: its relative paths are relative to this file's folder
    inputs: dict[str, Any]  # name -> expression text, literal value, or {"path": ...}
    outputs: dict[str, Any]  # name -> expression text, {"path": ...} or None (a place of our choosing)
    after: set[str] = field(default_factory=set)


@dataclass
class Pipeline:
    name: str
    path: Path
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    default_datastore: str | None
    continue_on_step_failure: bool
    steps: list[Step]
    unused: list[str]


def load_pipeline(path: Path) -> Pipeline:
    path = Path(os.path.abspath(path))
    doc = read_mapping(path)
    raw = parse_section(PipelineDoc, doc, path.name)
    if not raw.jobs:
        raise SpecError(f"{path.name}: jobs: names no step", "add at least one parallel or command job")
    unused = azure_only(doc)
    steps = []
    for name, body in raw.jobs.items():
        step = _step(path, name, body)
        unused += [f"jobs.{name}.{key}" for key in azure_only(body) + azure_only(step.doc) if key != "tags"]
        steps.append(step)
    ordered = _ordered(path.name, steps, set(raw.inputs or {}), set(raw.outputs or {}))
    return Pipeline(
        name=raw.name or raw.display_name or path.stem,
        path=path,
        inputs=dict(raw.inputs or {}),
        outputs=dict(raw.outputs or {}),
        default_datastore=(raw.settings.default_datastore or "").removeprefix("azureml:") or None,
        continue_on_step_failure=raw.settings.continue_on_step_failure,
        steps=ordered,
        unused=sorted(set(unused)),
    )


def _step(path: Path, name: str, body: dict[str, Any]) -> Step:
    where = f"{path.name}: jobs.{name}"
    if not isinstance(body, dict):
        raise SpecError(f"{where} must be a mapping")
    component = body.get("component")
    if component is not None:
        doc, source = _component(path, where, component)
        for key, value in body.items():
            if key in _STEP_ONLY:
                continue
            doc[key] = {**(doc.get(key) or {}), **value} if key in _MERGED and isinstance(value, dict) else value
        inputs, outputs = dict(body.get("inputs") or {}), dict(body.get("outputs") or {})
    else:
        doc, source = {k: v for k, v in body.items() if k not in ("inputs", "outputs")}, path
        declared_in, inputs = _split_inline(body.get("inputs") or {})
        declared_out, outputs = _split_inline(body.get("outputs") or {})
        doc["inputs"], doc["outputs"] = declared_in, declared_out
    kind = doc.get("type") or body.get("type") or ("command" if "command" in doc else None)
    if kind not in ("parallel", "command"):
        raise SpecError(
            f"{where}: type must be 'parallel' or 'command', got {kind!r}", "other Azure ML job types cannot run here"
        )
    doc["type"] = kind
    if component is None:
        doc.setdefault("name", name)  # an inline job is named after its step
    _check_doc(kind, doc, source, where)
    step = Step(
        name=name,
        kind="parallel" if kind == "parallel" else "command",
        doc=doc,
        source=source,
        inputs=inputs,
        outputs=outputs,
    )
    step.after = {match.group(1) for match in _PARENT_JOB.finditer(" ".join(_texts(inputs)))}
    return step


def _check_doc(kind: str, doc: dict[str, Any], source: Path, where: str) -> None:
    """Refuse a step's unknown keys, bad values and missing entry script before anything runs."""
    parse_section(V2JobDoc if kind == "parallel" else CommandDoc, doc, where)
    if kind == "parallel":
        spec_from_doc(doc, source)


def _component(path: Path, where: str, ref: object) -> tuple[dict[str, Any], Path]:
    if not isinstance(ref, str) or ref.startswith("azureml:"):
        raise SpecError(
            f"{where}: component {ref!r} must be a local YAML file",
            "registered Azure ML components cannot be fetched here: copy the component YAML next to the pipeline",
        )
    source = Path(os.path.abspath(path.parent / ref.removeprefix("file:")))
    if not source.is_file():
        raise SpecError(f"{where}: component file {source} not found", "it is relative to the pipeline YAML")
    return read_mapping(source), source


def _split_inline(ports: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An inline job's ports: their declarations, and their bindings (expressions and paths)."""
    declared: dict[str, Any] = {}
    bound: dict[str, Any] = {}
    for name, value in ports.items():
        if isinstance(value, str) and EXPRESSION.search(value):
            declared[name], bound[name] = None, value
        elif isinstance(value, dict):
            declared[name] = {k: v for k, v in value.items() if k != "path"}
            bound[name] = {"path": value["path"]} if value.get("path") is not None else None
        else:
            declared[name], bound[name] = value, None  # a literal input, or an output left to us
    return declared, {k: v for k, v in bound.items() if v is not None}


def _texts(values: dict[str, Any]) -> list[str]:
    out = []
    for value in values.values():
        if isinstance(value, dict):
            value = value.get("path")
        if isinstance(value, str):
            out.append(value)
    return out


def check_expression(where: str, text: str, inputs: set[str], outputs: set[str], steps: set[str]) -> None:
    """Every ${{...}} in a binding is one batchfleet fills."""
    for match in EXPRESSION.finditer(text):
        inner = match.group(1)
        job, port = _PARENT_JOB.fullmatch(inner), _PARENT_PORT.fullmatch(inner)
        if job and job.group(1) not in steps:
            raise SpecError(f"{where} uses '{match.group(0)}' but no step is called {job.group(1)!r}")
        if port and port.group(2) not in (inputs if port.group(1) == "inputs" else outputs):
            what = port.group(1)[:-1]
            raise SpecError(f"{where} uses '{match.group(0)}' but the pipeline declares no {what} {port.group(2)!r}")
        if not (job or port or inner in _GLOBALS):
            raise SpecError(
                f"{where} uses '{match.group(0)}', which batchfleet cannot fill",
                "use ${{parent.inputs.X}}, ${{parent.outputs.X}}, ${{parent.jobs.STEP.outputs.X}}, ${{name}} "
                "or ${{default_datastore}}",
            )


def _ordered(where: str, steps: list[Step], inputs: set[str], outputs: set[str]) -> list[Step]:
    """Steps in dependency order (ties in file order); a cycle is refused."""
    names = {step.name for step in steps}
    for step in steps:
        for port, text in [*((f"inputs.{k}", t) for k, t in _items(step.inputs)), *_items(step.outputs, "outputs")]:
            check_expression(f"{where}: jobs.{step.name}.{port}", text, inputs, outputs, names)
    done: list[Step] = []
    pending = list(steps)
    while pending:
        ready = [step for step in pending if step.after <= {d.name for d in done}]
        if not ready:
            stuck = ", ".join(step.name for step in pending)
            raise SpecError(f"{where}: the steps {stuck} depend on each other in a cycle")
        done.append(ready[0])
        pending.remove(ready[0])
    return done


def _items(ports: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    found = []
    for name, value in ports.items():
        text = value.get("path") if isinstance(value, dict) else value
        if isinstance(text, str):
            found.append((f"{prefix}.{name}" if prefix else name, text))
    return found
