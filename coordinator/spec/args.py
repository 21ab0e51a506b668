"""The command-line side of a job: setting flags and --set, NAME=PATH bindings, and the entry
script's own command line (args template rendering, Azure ML's predefined arguments)."""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from common.errors import SpecError, UsageError
from common.settings import SETTING_NAMES, V2_ALIASES, RunSettings, retries_as_tries

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_SUFFIX_WORDS = re.compile(r"[A-Za-z]+(?:,[A-Za-z]+)*")
_SUFFIXES = {"tabular": "kind", "files": "kind", "direct": "mode", "download": "mode"}
# `${{inputs.x}}` first, so its inner `{inputs.x}` is not matched on its own.
_PLACEHOLDER = re.compile(r"\$\{\{\s*(inputs|outputs)\.([\w-]+)\s*\}\}|\{(inputs|outputs)\.([\w-]+)\}")
_OPTIONAL_GROUP = re.compile(r"\[([^\[\]]*)\]")
# Azure ML's optional arguments: `$[[--name ${{inputs.x}}]]` disappears when x is not bound.
_AML_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.DOTALL)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add --<setting> (and --<setting-with-dashes>) for every RunSettings field, default None.

    Values stay text; pydantic validates them when the job is resolved. The caller adds
    its own `--set KEY=VALUE` (action="append") and passes it to collect_overrides().
    """
    from coordinator.spec.settings_doc import setting_docs

    group = parser.add_argument_group(
        "run settings", "override the spec's run settings (`batchfleet settings` lists them as a table)"
    )
    for doc in setting_docs():
        name = doc.name
        flags = [f"--{name}"]
        if "_" in name:
            flags.append(f"--{name.replace('_', '-')}")
        text = doc.help_line().replace("%", "%%")
        group.add_argument(*flags, dest=name, default=None, metavar=name.upper(), help=text)


def collect_overrides(ns: argparse.Namespace, sets: list[str] | None) -> dict[str, object]:
    """Settings given on the command line: the flags, then `--set` entries (a later one wins)."""
    found: dict[str, object] = {}
    for name in SETTING_NAMES:
        raw = getattr(ns, name, None)
        if raw is not None:
            found[name] = flag_value(name, str(raw))
    for entry in sets or []:
        key, value = _parse_set(entry)
        found[key] = value
    return found


def flag_value(name: str, raw: str) -> object:
    """A setting's value from flag text: lists split on commas, everything else as text."""
    if name == "partition_keys" and not raw.lstrip().startswith("["):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if name == "partition_keys":
        return _yaml_value(name, raw)
    return raw.strip()


def setting_name(key: str) -> str | None:
    """Our setting name for `key` (dashes allowed, v2 names accepted), None when unknown."""
    name = key.strip().replace("-", "_")
    name = V2_ALIASES.get(name, name)
    return name if name in SETTING_NAMES else None


def _parse_set(entry: str) -> tuple[str, object]:
    key, sep, raw = entry.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set expects KEY=VALUE, got '{entry}'", "for example --set run_max_try=2")
    name = setting_name(key)
    if name is None:
        known = [*SETTING_NAMES, *V2_ALIASES]
        close = difflib.get_close_matches(key.strip().replace("-", "_"), known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"settings are: {', '.join(SETTING_NAMES)}"
        raise UsageError(f"unknown setting '{key.strip()}' in --set {entry}", hint)
    if _is_text(name):
        return name, raw.strip()  # YAML would turn "off" or "no" into booleans
    value = _yaml_value(name, raw)
    if key.strip().replace("-", "_") == "max_retries":
        return name, retries_as_tries(value)  # retries after the first try, as in a v2 job
    return name, value


def _yaml_value(name: str, raw: str) -> object:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UsageError(f"cannot read the value of {name}: '{raw}'", "quote text, write lists as [a,b]") from None


def _is_text(name: str) -> bool:
    """True when every non-None type of the setting is text (`str | None` included)."""
    annotation = RunSettings.model_fields[name].annotation
    members = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return all(member is str or typing.get_origin(member) is Literal for member in members)


# --- NAME=PATH bindings --------------------------------------------------------------------------


class Binding(BaseModel):
    """One `--input NAME=PATH[:suffix]` or `--output NAME=PATH` from the command line."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    name: str
    path: str
    kind: Literal["files", "tabular"] | None = None
    mode: Literal["download", "direct"] | None = None


def parse_bindings(values: list[str] | None, what: str) -> dict[str, Binding]:
    """Parse NAME=PATH values of --<what>; PATH may end in :tabular, :files, :direct, :download."""
    found: dict[str, Binding] = {}
    for text in values or []:
        binding = _parse_binding(text, what)
        if binding.name in found:
            raise UsageError(f"--{what} {binding.name} is given twice", f"pass each {what} once")
        found[binding.name] = binding
    return found


def _parse_binding(text: str, what: str) -> Binding:
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.fullmatch(name) or not rest.strip():
        raise UsageError(
            f"--{what} expects NAME=PATH, got '{text}'",
            f"for example --{what} images=./data or --{what} rows=s3://bucket/rows:tabular",
        )
    head, colon, tail = rest.rpartition(":")
    # Only a tail of plain words is a suffix, so s3://... and C:\... stay whole.
    if not colon or not head or not _SUFFIX_WORDS.fullmatch(tail):
        return Binding(name=name, path=rest)
    chosen: dict[str, str] = {}
    for word in tail.lower().split(","):
        slot = _SUFFIXES.get(word)
        if slot is None:
            raise UsageError(
                f"unknown suffix ':{tail}' in --{what} {text}",
                "use :tabular, :files, :direct or :download (combine with a comma, e.g. :tabular,direct)",
            )
        if chosen.get(slot, word) != word:
            raise UsageError(f"conflicting suffixes ':{tail}' in --{what} {text}", f"choose one {slot}")
        chosen[slot] = word
    return Binding.model_validate({"name": name, "path": head, **chosen})


# --- the entry script's command line -------------------------------------------------------------


def placeholders(template: str) -> Iterator[tuple[str, str, str]]:
    """(group, name, text) for each `{inputs.x}` / `${{outputs.y}}` in the template."""
    for match in _PLACEHOLDER.finditer(template):
        group, name = _group_name(match)
        yield group, name, match.group(0)


def strip_placeholders(template: str) -> str:
    """The template without its placeholders (to spot expressions we cannot fill)."""
    return _PLACEHOLDER.sub("", template)


def split_args(template: str, where: str, field: str) -> list[str]:
    """shlex-split an args template; unbalanced quotes are a SpecError."""
    try:
        return shlex.split(template)
    except ValueError as exc:
        raise SpecError(f"{where}: {field} cannot be split into arguments: {exc}", "check quotes") from None


def render_args(template: str, values: Mapping[tuple[str, str], str], where: str) -> list[str]:
    """Split the template into arguments, then fill placeholders per argument (so a path with
    spaces stays one argument); drop `[ ... ]` groups whose placeholders are not all bound."""

    def keep_group(match: re.Match[str]) -> str:
        refs = [(group, name) for group, name, _ in placeholders(match.group(1))]
        if not refs:
            # Plain brackets are not an optional group; Azure's `$[[ ]]` without a placeholder is kept.
            return match.group(1) if match.group(0).startswith("$") else match.group(0)
        return match.group(1) if all(ref in values for ref in refs) else ""

    def fill(match: re.Match[str]) -> str:
        group, name = _group_name(match)
        if (group, name) not in values:
            what = group[:-1]
            raise UsageError(
                f"the arguments use {match.group(0)} but {what} '{name}' is not bound",
                f"pass --{what} {name}=PATH, or wrap it in [ ] in the spec to make it optional",
            )
        return values[(group, name)]

    # `${{ inputs.x }}` may hold spaces; make each placeholder one word before splitting.
    template = _PLACEHOLDER.sub(lambda m: _word(*_group_name(m)), template)
    template = _OPTIONAL_GROUP.sub(keep_group, _AML_OPTIONAL.sub(keep_group, template))
    tokens = split_args(template, where, "args")
    return [_PLACEHOLDER.sub(fill, token) for token in tokens]


def render_command(template: str, values: Mapping[tuple[str, str], str], quote: Callable[[str], str]) -> str:
    """A command job's shell line: optional groups kept or dropped as in render_args, then each
    placeholder replaced by its value through `quote`; the rest of the line is left as written."""

    def keep_group(match: re.Match[str]) -> str:
        refs = [(group, name) for group, name, _ in placeholders(match.group(1))]
        return match.group(1) if all(ref in values for ref in refs) else ""

    def fill(match: re.Match[str]) -> str:
        group, name = _group_name(match)
        if (group, name) not in values:
            what = group[:-1]
            raise UsageError(
                f"the command uses {match.group(0)} but {what} '{name}' is not bound",
                f"bind {what} '{name}' in the pipeline, or wrap it in $[[ ]] to make it optional",
            )
        return quote(values[(group, name)])

    return _PLACEHOLDER.sub(fill, _AML_OPTIONAL.sub(keep_group, template))


def unwrap_optional(template: str) -> str:
    """The template with Azure ML's `$[[ ]]` markers removed (their content kept)."""
    return _AML_OPTIONAL.sub(lambda m: f" {m.group(1)} ", template)


def settings_in_args(tokens: list[str]) -> dict[str, object]:
    """Run settings given as arguments (`--error_threshold 5`), as Azure ML reads them."""
    found: dict[str, object] = {}
    for index, token in enumerate(tokens):
        key, eq, value = token.removeprefix("--").partition("=")
        name = key.replace("-", "_")
        if not token.startswith("--") or name not in SETTING_NAMES:
            continue
        if not eq:
            if index + 1 >= len(tokens) or tokens[index + 1].startswith("--"):
                continue
            value = tokens[index + 1]
        if not _PLACEHOLDER.search(value):
            found[name] = flag_value(name, value)
    return found


def _word(group: str, name: str) -> str:
    return "${{" + f"{group}.{name}" + "}}"


def _group_name(match: re.Match[str]) -> tuple[str, str]:
    if match.group(1):
        return match.group(1), match.group(2)
    return match.group(3), match.group(4)
