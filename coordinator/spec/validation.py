"""What a valid spec looks like: YAML reading, the two formats' schemas, one-line error messages,
and a static check of the entry script."""

from __future__ import annotations

import ast
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from common.errors import EntryScriptError, SpecError

_M = TypeVar("_M", bound=BaseModel)

# Loc parts pydantic adds for union members; they are not fields a person wrote.
_UNION_TAGS = {"int", "str", "float", "bool", "list", "dict", "none", "literal"}

_Walk = tuple[list[str], "type[BaseModel] | None"]


def describe(
    exc: ValidationError,
    where: str,
    *,
    model: type[BaseModel] | None = None,
    rename: Mapping[str, str] | None = None,
) -> str:
    """One line naming the field path and the problem.

    `where` prefixes the line: a file name gives "spec.yaml: a.b: problem" and
    "spec.yaml: unknown field 'a.x'", a plain word gives "setting a.b: problem" and
    "unknown setting 'x'". `model` (found from the error's title when
    omitted) lets an unknown field list the allowed names; `rename` shows a first
    path part under another name (a v2 YAML key for one of our settings).
    """
    return describe_errors(exc.errors(include_url=False), where, model=model or _model_named(exc.title), rename=rename)


def describe_errors(
    errors: Sequence[ErrorDetails],
    where: str,
    *,
    model: type[BaseModel] | None = None,
    rename: Mapping[str, str] | None = None,
) -> str:
    """describe() for an already extracted error list."""
    if not errors:
        return f"{where}: invalid value"
    # A misspelt key shows up twice, as unknown and as missing: the unknown one says what to fix.
    rank = {"extra_forbidden": 0, "missing": 2}
    errors = sorted(errors, key=lambda err: rank.get(err["type"], 1))
    walks = [_walk(model, err["loc"], err["type"] == "extra_forbidden", rename or {}) for err in errors]
    first, (shown, owner) = errors[0], walks[0]
    path = _join(shown)
    # A plain word names the kind of thing ("unknown setting 'x'"); a file name is a prefix.
    field = f"{where} '{path}'" if where.isidentifier() else f"{where}: field '{path}'"
    if first["type"] == "extra_forbidden":
        unknown = f"unknown {where}" if where.isidentifier() else f"{where}: unknown field"
        suggestion = _suggest(str(first["loc"][-1]), owner)
        line = f"{unknown} '{path}'; check the spelling{suggestion}"
    elif first["type"] == "missing":
        line = f"{field} is required"
    else:
        sep = " " if where.isidentifier() else ": "
        line = f"{where}{sep}{path}: {problem(first)}" if path else f"{where}: {problem(first)}"
    others = len({_join(s) for s, _ in walks} - {path})
    if others:
        line += f" (and {others} more problem{'s' if others > 1 else ''})"
    return " ".join(line.split())


def problem(err: ErrorDetails) -> str:
    """The problem part of one pydantic error, without its location."""
    kind, ctx, got = err["type"], err.get("ctx") or {}, _show(err.get("input"))
    if kind in ("value_error", "assertion_error"):
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        return msg
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt")}
    bounds |= {"less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {_show(ctx.get(key))}, got {got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got}"
    simple = {
        "int_": "a whole number",
        "float_": "a number",
        "bool_": "true or false",
        "string_type": "text",
        "dict_": "a mapping",
        "model_": "a mapping",
        "list_": "a list",
    }
    for start, what in simple.items():
        if kind.startswith(start):
            return f"must be {what}, got {got}"
    msg = err["msg"]
    return msg[:1].lower() + msg[1:]


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(parts: list[str]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text


def _suggest(name: str, owner: type[BaseModel] | None) -> str:
    if owner is None:
        return ""
    allowed = [field.alias or key for key, field in owner.model_fields.items()]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f", did you mean '{close[0]}'?" if close else ""
    return f"{hint} (allowed: {', '.join(allowed)})"


def _walk(model: Any, loc: tuple[int | str, ...], extra: bool, rename: Mapping[str, str]) -> _Walk:
    """Follow `loc` through the model's annotations: the path a person wrote, and the model
    that owns the last part (to list allowed names)."""
    shown: list[str] = []
    current: Any = model
    for index, part in enumerate(loc):
        if index == len(loc) - 1 and extra:
            shown.append(str(part))
            return _named(shown, rename, loc), _as_model(current)
        step = _step(current, part)
        if step is None:
            continue  # a union member tag pydantic put in the location
        shown.append(str(part))
        current = step
    return _named(shown, rename, loc), None


def _named(shown: list[str], rename: Mapping[str, str], loc: tuple[int | str, ...]) -> list[str]:
    if shown and loc and isinstance(loc[0], str) and loc[0] in rename and shown[0] == loc[0]:
        return [rename[loc[0]], *shown[1:]]
    return shown


def _step(tp: Any, part: int | str) -> Any:
    """The annotation reached from `tp` through `part`, Any when unknown, None for a union tag."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _step(args[0], part)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if isinstance(part, str) and (part in _UNION_TAGS or "[" in part):
            return None
        for member in members:
            found = _step(member, part)
            if found is not None:
                return found
        return None
    model = _as_model(tp)
    if model is not None:
        for key, field in model.model_fields.items():
            if part in (key, field.alias):
                return field.annotation
        return Any
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, Sequence, tuple) and args:
        return args[0]
    return Any


def _as_model(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            found = _as_model(member)
            if found is not None:
                return found
    return None


def _model_named(title: str) -> type[BaseModel] | None:
    """The unique loaded model class called `title`, if there is exactly one."""
    found: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [BaseModel]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if sub.__name__ == title:
                found.append(sub)
    return found[0] if len(set(found)) == 1 else None


# --- spec files: YAML reading and the two formats' schemas ---------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key if isinstance(key, str) else id(key))
        return super().construct_mapping(node, deep=deep)


def read_mapping(path: Path) -> dict[str, Any]:
    """A spec file's top-level mapping; SpecError (with the line for YAML errors) otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file {path} not found", "check the path") from None
    except IsADirectoryError:
        raise SpecError(f"{path} is a folder, not a spec file", "pass the YAML file itself") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {path}: {exc}") from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        problem = f"{path.name}: YAML syntax error at line {line}: {exc.problem}"
        raise SpecError(problem, "fix the YAML") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path.name}: cannot read YAML: {exc}") from None
    if not isinstance(doc, dict):
        got = "nothing (empty file)" if doc is None else f"a {type(doc).__name__}"
        raise SpecError(f"{path.name}: expected a mapping of fields at the top, got {got}")
    return doc


def is_pipeline(path: Path) -> bool:
    """True when the YAML file says `type: pipeline` (an unreadable file is left to the loaders)."""
    try:
        return read_mapping(Path(path)).get("type") == "pipeline"
    except SpecError:
        return False


def parse_section(model: type[_M], data: Mapping[str, Any], where: str, **rename: str) -> _M:
    """model.model_validate(data), a failure as one SpecError line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe(exc, where, model=model, rename=rename)) from None


def _as_text(value: object) -> object:
    return value if value is None or isinstance(value, str) else str(value)


def _none_as_empty(value: object) -> object:
    return {} if value is None else value


_Text = Annotated[str | None, BeforeValidator(_as_text)]
AzureMode = Literal["download", "direct", "ro_mount", "rw_mount", "upload", "eval_mount", "eval_download"]


class Section(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


class RawPort(Section):
    """An input or output as either YAML format declares it; a bare value is a literal input."""

    type: str = "uri_folder"
    description: str | None = None
    optional: bool = False
    default: Any = None
    path: _Text = None
    mode: AzureMode | None = None
    enum: list[Any] | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if value is None:
            return {}
        if isinstance(value, bool | int | float | str):
            kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
            return {"type": kinds[type(value)], "default": value}
        return value


Ports = Annotated[dict[str, RawPort], BeforeValidator(_none_as_empty)]


class ParallelDoc(Section):
    """The `parallel:` section of a ParallelComponent."""

    input_data: str | list[str]
    output_data: str | None = None
    entry: str
    args: str = ""


class ComponentDoc(Section):
    """A ParallelComponent YAML (seed format), plus our optional `code:` and `run_settings:`."""

    schema_: str | None = Field(default=None, alias="$schema")
    name: str
    version: _Text = None
    display_name: str | None = None
    type: Literal["ParallelComponent"] = "ParallelComponent"
    description: str | None = None
    tags: dict[str, Any] | list[Any] | None = None
    is_deterministic: bool | None = None
    inputs: Ports = {}
    outputs: Ports = {}
    environment: dict[str, Any] | str | None = None
    code: str | None = None
    parallel: ParallelDoc
    run_settings: dict[str, Any] | None = None


class RetryDoc(Section):
    max_retries: int | None = Field(default=None, ge=0, description="Retries after the first try.")
    timeout: Any = None


class ResourcesDoc(Section):
    """Compute resources; only instance_count means something here (the others are Azure's)."""

    instance_count: Any = None
    instance_type: str | None = None
    shm_size: str | None = None
    docker_args: str | None = None
    properties: dict[str, Any] | None = None


class TaskDoc(Section):
    type: Literal["run_function", "function"] = "run_function"
    code: str | None = None
    entry_script: str
    environment: dict[str, Any] | str | None = None
    program_arguments: str = ""
    append_row_to: str | None = None


class V2JobDoc(Section):
    """An Azure ML v2 `type: parallel` job (or parallel component) YAML.

    Run settings stay untyped here: they are checked as RunSettings under our names, and
    reported under these keys."""

    schema_: str | None = Field(default=None, alias="$schema")
    type: Literal["parallel"] = "parallel"
    name: str | None = None
    version: _Text = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None
    experiment_name: str | None = None
    compute: str | None = None
    is_deterministic: bool | None = None
    inputs: Ports = {}
    outputs: Ports = {}
    input_data: str
    mini_batch_size: Any = None
    mini_batch_error_threshold: Any = None
    error_threshold: Any = None
    logging_level: Any = None
    max_concurrency_per_instance: Any = None
    partition_keys: Any = None
    resources: ResourcesDoc | None = None
    retry_settings: RetryDoc | None = None
    environment_variables: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    task: TaskDoc


# Keys that only mean something on Azure ML: accepted, and reported as not used.
AZURE_ONLY = (
    "compute",
    "experiment_name",
    "tags",
    "identity",
    "resources.instance_type",
    "resources.shm_size",
    "resources.docker_args",
    "resources.properties",
    "task.environment.name",
    "task.environment.version",
    "environment.name",
    "environment.version",
    "settings.default_compute",
    "queue_settings",
    "services",
    "distribution",
)


def azure_only(doc: Mapping[str, Any]) -> list[str]:
    """The AZURE_ONLY keys `doc` sets, dotted."""
    found = []
    for key in AZURE_ONLY:
        value: Any = doc
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            found.append(key)
    return found


# --- entry script --------------------------------------------------------------------------------

_RUN_SHAPE = "run() must take 1 or 2 parameters (mini_batch[, mini_batch_context])"


def check_entry_source(path: Path) -> None:
    """Check the entry script without importing it: it parses and has a usable run()."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise EntryScriptError(f"cannot read entry script {path}: {exc.strerror or exc}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise EntryScriptError(f"{path}:{exc.lineno or 0}: syntax error: {exc.msg}", "fix the entry script") from None
    except ValueError as exc:  # e.g. null bytes: not Python source at all
        raise EntryScriptError(f"{path}: not Python source ({exc})") from None
    functions = _module_functions(tree.body)
    run = functions.get("run")
    if run is None:
        if _binds(tree.body, "run"):
            return  # imported or assigned: only the import at run time can tell
        raise EntryScriptError(f"{path} has no run() function", "define run(mini_batch) at module level")
    if isinstance(run, ast.AsyncFunctionDef):
        raise EntryScriptError(f"{path}:{run.lineno}: run() is async", "batchfleet calls run() directly: use def")
    if not _accepts(run, 1, 2):
        raise EntryScriptError(f"{path}:{run.lineno}: {_RUN_SHAPE}")
    for name in ("init", "shutdown"):
        hook = functions.get(name)
        if hook is not None and not _accepts(hook, 0, 0):
            raise EntryScriptError(f"{path}:{hook.lineno}: {name}() must take no parameters")


_Function = ast.FunctionDef | ast.AsyncFunctionDef


def _module_functions(body: list[ast.stmt]) -> dict[str, _Function]:
    """Functions defined at module level, including under if/try/with; the last one wins."""
    found: dict[str, _Function] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.If):
            found |= _module_functions(node.body) | _module_functions(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                found |= _module_functions(block)
        elif isinstance(node, ast.With):
            found |= _module_functions(node.body)
    return found


def _binds(body: list[ast.stmt], name: str) -> bool:
    """True when `name` is bound at module level other than by def (import, assignment, class)."""
    for stmt in body:
        if isinstance(stmt, ast.ClassDef):
            if stmt.name == name:
                return True
            continue
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Import | ast.ImportFrom):
                if any((alias.asname or alias.name.split(".")[0]) == name for alias in node.names):
                    return True
            elif isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store):
                return True
    return False


def _accepts(fn: _Function, low: int, high: int) -> bool:
    """Can fn be called with some count of positional arguments between low and high?"""
    args = fn.args
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    if any(default is None for default in args.kw_defaults):
        return False  # a required keyword-only parameter is never passed
    upper = high if args.vararg is not None else min(high, positional)
    return max(low, required) <= upper
