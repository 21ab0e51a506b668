"""Component or Azure ML v2 parallel job YAML -> one JobSpec; JobSpec + bindings -> Resolved."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import SpecError, UsageError
from common.messages import InputBinding, PythonEnvironment
from common.settings import V2_DEFAULT_RETRIES, RunSettings, v2_setting
from common.storage.base import join_uri
from coordinator.spec.args import (
    Binding,
    parse_bindings,
    placeholders,
    render_args,
    settings_in_args,
    split_args,
    strip_placeholders,
    unwrap_optional,
)
from coordinator.spec.datastores import DataMap
from coordinator.spec.environment import read_environment
from coordinator.spec.mltable import mltable_data
from coordinator.spec.validation import (
    ComponentDoc,
    RawPort,
    ResourcesDoc,
    RetryDoc,
    V2JobDoc,
    azure_only,
    check_entry_source,
    describe,
    parse_section,
    read_mapping,
)

__all__ = [
    "Binding",
    "JobSpec",
    "Port",
    "Resolved",
    "check_entry_source",
    "load_spec",
    "parse_bindings",
    "resolve",
]

_REFERENCE = re.compile(r"\s*(?:\$\{\{\s*|\{\s*)?(inputs|outputs)\.([\w-]+)\s*(?:\}\}|\})?\s*")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
_VALUE_TYPES = {"string", "str", "integer", "int", "number", "float", "boolean", "bool", "enum"}
_TABLE_TYPES = {"mltable", "tabulardataset", "tabular"}
_TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")


class Port(BaseModel):
    """A declared input or output; `path` is a default location, `default` a literal value."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    type: str
    optional: bool = False
    mode: Literal["download", "direct"] = "download"
    path: str | None = Field(default=None, description="Absolute local path or URI from the spec.")
    default: Any = None
    description: str | None = None


class JobSpec(BaseModel):
    """Everything a spec file says, in one shape whichever format it was written in."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    name: str
    kind: Literal["component", "parallel_job"]
    spec_path: Path
    code_dir: Path
    entry_script: str = Field(description="Relative to code_dir, with '/' separators.")
    args_template: str = ""
    inputs: dict[str, Port] = {}
    outputs: dict[str, Port] = {}
    input_data: list[str]
    output_data: str | None = None
    environment: dict[str, Any] | None = None
    python_env: PythonEnvironment | None = None
    environment_variables: dict[str, str] = {}
    settings: dict[str, Any] = Field(default_factory=dict, description="RunSettings values the spec sets.")
    unused: list[str] = Field(default_factory=list, description="Keys only Azure ML acts on, accepted and ignored.")


class Resolved(BaseModel):
    """A spec bound to locations and settings: what a JobConfig is built from."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    settings: RunSettings
    args: list[str]
    inputs: dict[str, InputBinding]
    outputs: dict[str, str]
    output_uri: str


# --- loading --------------------------------------------------------------------------------------


def load_spec(path: Path) -> JobSpec:
    """Read a ParallelComponent YAML or an Azure ML v2 `type: parallel` job YAML."""
    path = Path(os.path.abspath(path))
    return spec_from_doc(read_mapping(path), path)


def spec_from_doc(doc: dict[str, Any], path: Path) -> JobSpec:
    """A spec from an already read mapping; `path` names it and anchors its relative paths."""
    kind = doc.get("type")
    if kind == "ParallelComponent" or (kind is None and "parallel" in doc):
        spec, args_field = _from_component(doc, path), "parallel.args"
    elif kind == "parallel" or (kind is None and "task" in doc):
        spec, args_field = _from_v2(doc, path), "task.program_arguments"
    elif kind == "pipeline":
        raise SpecError(f"{path.name} is a pipeline job, not one parallel job", "run it with `batchfleet run`")
    else:
        raise SpecError(
            f"{path.name}: type must be 'ParallelComponent' (component spec) or 'parallel' (v2 job), got {kind!r}"
        )
    _check_args(spec, args_field)
    return spec


def _from_component(doc: dict[str, Any], path: Path) -> JobSpec:
    where, folder = path.name, path.parent
    raw = parse_section(ComponentDoc, doc, where)
    code_dir = _code_dir(raw.code, folder, where, "code")
    inputs = {name: _port(port, folder) for name, port in raw.inputs.items()}
    outputs = {name: _port(port, folder) for name, port in raw.outputs.items()}
    sources = [raw.parallel.input_data] if isinstance(raw.parallel.input_data, str) else raw.parallel.input_data
    keyed = raw.run_settings or {}
    return JobSpec(
        name=raw.name,
        kind="component",
        spec_path=path,
        code_dir=code_dir,
        entry_script=_entry(code_dir, raw.parallel.entry, where, "parallel.entry"),
        args_template=raw.parallel.args,
        inputs=inputs,
        outputs=outputs,
        input_data=[_ref(s, "inputs", inputs, where, "parallel.input_data") for s in sources],
        output_data=_ref(raw.parallel.output_data, "outputs", outputs, where, "parallel.output_data"),
        environment=_environment(raw.environment),
        python_env=read_environment(_environment(raw.environment), folder, where),
        settings=_settings(
            where, "parallel.args", raw.parallel.args, keyed, {key: f"run_settings.{key}" for key in keyed}
        ),
    )


def _from_v2(doc: dict[str, Any], path: Path) -> JobSpec:
    where, folder = path.name, path.parent
    raw = parse_section(V2JobDoc, doc, where)
    task = raw.task
    code_dir = _code_dir(task.code, folder, where, "task.code")
    inputs = {name: _port(port, folder) for name, port in raw.inputs.items()}
    outputs = {name: _port(port, folder) for name, port in raw.outputs.items()}
    output_data = _ref(task.append_row_to, "outputs", outputs, where, "task.append_row_to")
    keyed, rename = _v2_settings(raw)
    # Azure ML v2 merges returned rows only when append_row_to names an output.
    keyed["output_action"] = "append_row" if output_data else "summary_only"
    if output_data is None and len(outputs) == 1:
        output_data = next(iter(outputs))  # results and logs need a home even with summary_only
    variables = {key: _env_text(value) for key, value in (raw.environment_variables or {}).items()}
    return JobSpec(
        name=raw.name or raw.display_name or path.stem,
        kind="parallel_job",
        spec_path=path,
        code_dir=code_dir,
        entry_script=_entry(code_dir, task.entry_script, where, "task.entry_script"),
        args_template=task.program_arguments,
        inputs=inputs,
        outputs=outputs,
        input_data=[_ref(raw.input_data, "inputs", inputs, where, "input_data")],
        output_data=output_data,
        environment=_environment(task.environment),
        python_env=read_environment(_environment(task.environment), folder, where),
        environment_variables=variables,
        settings=_settings(where, "task.program_arguments", task.program_arguments, keyed, rename),
        unused=azure_only(doc),
    )


def _v2_settings(raw: V2JobDoc) -> tuple[dict[str, Any], dict[str, str]]:
    """v2 keys that are run settings, under our names, and the v2 path of each for messages."""
    retry, resources = raw.retry_settings or RetryDoc(), raw.resources or ResourcesDoc()
    by_path = {
        "mini_batch_size": raw.mini_batch_size,
        "mini_batch_error_threshold": raw.mini_batch_error_threshold,
        "error_threshold": raw.error_threshold,
        "logging_level": raw.logging_level,
        "max_concurrency_per_instance": raw.max_concurrency_per_instance,
        "partition_keys": raw.partition_keys,
        "resources.instance_count": resources.instance_count,
        "retry_settings.max_retries": V2_DEFAULT_RETRIES if retry.max_retries is None else retry.max_retries,
        "retry_settings.timeout": retry.timeout,
    }
    values: dict[str, Any] = {}
    rename: dict[str, str] = {}
    for v2_path, value in by_path.items():
        ours, value = v2_setting(v2_path.rsplit(".", 1)[-1], value)
        rename[ours] = v2_path
        if value is not None:
            values[ours] = value
    return values, rename


def _settings(where: str, args_field: str, args: str, keyed: dict[str, Any], rename: dict[str, str]) -> dict[str, Any]:
    """Run settings the spec sets: predefined arguments in its args, then its own keys (which win)."""
    from_args = settings_in_args(split_args(unwrap_optional(args), where, args_field))
    checked: dict[str, Any] = {}
    origins = ({key: f"{args_field} --{key}" for key in from_args}, rename)
    for values, names in zip((from_args, keyed), origins, strict=True):
        try:
            model = RunSettings.model_validate(values)
        except ValidationError as exc:
            raise SpecError(describe(exc, where, model=RunSettings, rename=names)) from None
        checked |= model.model_dump(include=set(values))
    return checked


def _check_args(spec: JobSpec, args_field: str) -> None:
    """Every placeholder names a declared port; no expression we cannot fill; batched data is data."""
    where = spec.spec_path.name
    for group, name, text in placeholders(spec.args_template):
        declared = spec.inputs if group == "inputs" else spec.outputs
        if name not in declared:
            raise SpecError(f"{where}: {args_field} uses '{text}' but {_no_such(group, name, declared)}")
    leftover = re.search(r"\$\{\{[^}]*\}\}", strip_placeholders(spec.args_template))
    if leftover:
        raise SpecError(
            f"{where}: {args_field} uses '{leftover.group(0)}', which batchfleet cannot fill",
            "use ${{inputs.NAME}} or ${{outputs.NAME}}",
        )
    for name in spec.input_data:
        if _is_value(spec.inputs[name].type):
            raise SpecError(f"{where}: input_data names '{name}', a {spec.inputs[name].type} value, not data")


def _no_such(group: str, name: str, declared: Mapping[str, object]) -> str:
    return f"no {group[:-1]} '{name}' is declared (declared {group}: {', '.join(declared) or 'none'})"


def _ref(text: str | None, group: str, declared: Mapping[str, Port], where: str, field: str) -> Any:
    """The port name in `inputs.x`, `{inputs.x}` or `${{inputs.x}}`; None passes through."""
    if text is None:
        return None
    match = _REFERENCE.fullmatch(text)
    if not match or match.group(1) != group:
        raise SpecError(f"{where}: {field} must look like ${{{{{group}.NAME}}}}, got '{text}'")
    if match.group(2) not in declared:
        missing = _no_such(group, match.group(2), declared)
        raise SpecError(f"{where}: {field} names '{text.strip()}' but {missing}")
    return match.group(2)


def _port(raw: RawPort, folder: Path) -> Port:
    path = located(raw.path, folder) if raw.path is not None else None
    default = raw.default
    if path is None and isinstance(default, str) and not _is_value(raw.type):
        path, default = located(default, folder), None  # a path-typed default is a location
    # Tables are read by row range, never downloaded whole (the seed: tabular needs direct).
    direct = raw.mode == "direct" or (raw.mode is None and raw.type.lower() in _TABLE_TYPES)
    return Port(
        type=raw.type,
        optional=raw.optional,
        mode="direct" if direct else "download",
        path=path,
        default=default,
        description=raw.description,
    )


def _is_value(port_type: str) -> bool:
    return port_type.lower() in _VALUE_TYPES


def located(text: str, base: Path) -> str:
    """A URI or Azure asset reference unchanged; a local path made absolute against `base`."""
    if _URI.match(text) or text.startswith("azureml:"):
        return text
    return os.path.abspath(base / os.path.expanduser(text))


def _code_dir(code: str | None, folder: Path, where: str, field: str) -> Path:
    if code is None:
        return folder
    if _URI.match(code) or code.startswith("azureml:"):
        raise SpecError(f"{where}: {field} '{code}' must be a local folder")
    found = Path(os.path.abspath(folder / code))
    if not found.is_dir():
        raise SpecError(f"{where}: {field} folder {found} does not exist", "it is relative to the YAML file")
    return found


def _entry(code_dir: Path, entry: str, where: str, field: str) -> str:
    script = Path(os.path.abspath(code_dir / entry))
    try:
        relative = script.relative_to(code_dir)
    except ValueError:
        raise SpecError(f"{where}: {field} '{entry}' is outside the code folder {code_dir}") from None
    if script.suffix != ".py":
        raise SpecError(f"{where}: {field} '{entry}' must be a Python file (.py)")
    if not script.is_file():
        raise SpecError(f"{where}: entry script '{entry}' not found in {code_dir}", f"check {field}")
    check_entry_source(script)
    return relative.as_posix()


def _environment(value: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """Recorded as written; a named environment (`azureml:env@latest`) as {"reference": name}."""
    return {"reference": value} if isinstance(value, str) else value


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# --- resolving ------------------------------------------------------------------------------------


def resolve(
    spec: JobSpec,
    inputs: Mapping[str, Binding],
    outputs: Mapping[str, Binding],
    overrides: Mapping[str, object],
    data: DataMap | None = None,
) -> Resolved:
    """Bind the spec's ports to locations, settle settings (spec, then overrides), render args;
    `data` maps Azure ML datastore and data asset references."""
    data = data or DataMap()
    _check_known(inputs, spec.inputs, "input")
    _check_known(outputs, spec.outputs, "output")
    try:
        settings = RunSettings.model_validate({**spec.settings, **overrides})
    except ValidationError as exc:
        raise UsageError(describe(exc, "setting", model=RunSettings)) from None
    bound: dict[str, InputBinding] = {}
    for name, port in spec.inputs.items():
        binding = _bind_input(name, port, inputs.get(name), data)
        if binding is not None:
            bound[name] = binding
    for name in spec.input_data:
        if name not in bound:
            raise UsageError(f"input '{name}' is mini-batched but not bound", f"pass --input {name}=PATH")
    locations, output_uri, file_name = _bind_outputs(spec, outputs, data)
    if file_name and "append_row_file_name" not in {**spec.settings, **overrides}:
        settings = RunSettings.model_validate({**settings.model_dump(), "append_row_file_name": file_name})
    _check_batch_size(settings, [bound[name] for name in spec.input_data])
    values = {("inputs", name): binding.uri for name, binding in bound.items()}
    values |= {("outputs", name): uri for name, uri in locations.items()}
    args = render_args(spec.args_template, values, spec.spec_path.name)
    return Resolved(settings=settings, args=args, inputs=bound, outputs=locations, output_uri=output_uri)


def _check_known(given: Mapping[str, Binding], declared: Mapping[str, Port], what: str) -> None:
    for name in given:
        if name not in declared:
            raise UsageError(f"--{what} {name}: {_no_such(what + 's', name, declared)}")


def _bind_input(name: str, port: Port, given: Binding | None, data: DataMap) -> InputBinding | None:
    value_type = _is_value(port.type)
    if given is not None:
        uri = given.path if value_type else located(given.path, Path.cwd())
    elif port.path is not None:
        uri = port.path
    elif port.default is not None:
        uri = str(port.default)
    elif port.optional:
        return None
    else:
        how = "VALUE" if value_type else "PATH"
        raise UsageError(f"input '{name}' is required but not bound", f"pass --input {name}={how}")
    if value_type:
        return InputBinding(name=name, uri=uri, kind="value", mode="direct")
    uri = data.locate(uri, f"input '{name}'")
    table = mltable_data(uri, data.storage, f"input '{name}'") if port.type.lower() == "mltable" else None
    if table is not None:
        return InputBinding(name=name, uri=table, kind="tabular", mode="direct")
    kind = (given.kind if given else None) or _kind(port, uri)
    mode = (given.mode if given else None) or ("direct" if kind == "tabular" else port.mode)
    return InputBinding(name=name, uri=uri, kind=kind, mode=mode)


def _kind(port: Port, uri: str) -> Literal["files", "tabular"]:
    port_type = port.type.lower()
    if port_type in _TABLE_TYPES or (port_type == "uri_file" and uri.lower().endswith(_TABLE_SUFFIXES)):
        return "tabular"
    return "files"


def _bind_outputs(spec: JobSpec, given: Mapping[str, Binding], data: DataMap) -> tuple[dict[str, str], str, str | None]:
    """Output locations, the job's output folder, and the merged file's name if a uri_file names it."""
    main = spec.output_data
    if main is None:
        raise UsageError(
            f"{spec.spec_path.name} names no output for results and logs",
            "set output_data (component) or task.append_row_to (v2 job) to one of its outputs",
        )
    locations: dict[str, str] = {}
    for name, port in spec.outputs.items():
        if name in given:
            locations[name] = located(given[name].path, Path.cwd())
        elif port.path is not None:
            locations[name] = port.path
        if name in locations:
            locations[name] = data.locate(locations[name], f"output '{name}'")
    if main not in locations:
        raise UsageError(f"output '{main}' is not bound", f"pass --output {main}=PATH")
    output_uri, file_name = locations[main], None
    if spec.outputs[main].type.lower() == "uri_file":
        # A uri_file output names the merged file itself; logs go beside it.
        output_uri, _, file_name = output_uri.rstrip("/\\").replace("\\", "/").rpartition("/")
        output_uri = output_uri or "/"
    for name in spec.outputs:
        locations.setdefault(name, join_uri(output_uri, name))
    return locations, output_uri, file_name


def _check_batch_size(settings: RunSettings, batched: list[InputBinding]) -> None:
    """A file count for file inputs, a size for tables; partition_keys make it moot."""
    if settings.partition_keys is not None:
        return
    for binding in batched:
        try:
            settings.bytes_per_batch() if binding.kind == "tabular" else settings.files_per_batch()
        except ValueError as exc:
            raise UsageError(f"input '{binding.name}': {exc}") from None
