"""An MLTable folder (a folder with an `MLTable` file) as a tabular input: the one file or folder its
`paths` name, read as its `read_delimited` / `read_parquet` / `read_json_lines` transformation says."""

from __future__ import annotations

import re
from typing import Any

import yaml

from common.errors import StorageError, UsageError
from common.storage import StorageOptions, join_uri, open_storage

READERS = {"read_delimited": ".csv", "read_parquet": ".parquet", "read_json_lines": ".jsonl"}
_PATTERN = re.compile(r"(?:\./)?((?:[^*?\[\]]+/)?)(?:\*\*/)?\*\.(\w+)")


def mltable_data(uri: str, options: StorageOptions, what: str) -> str | None:
    """The data location an MLTable folder names, or None when `uri` holds no MLTable file."""
    storage = open_storage(uri, options)
    spec_uri = join_uri(uri, "MLTable")
    try:
        if not storage.exists(spec_uri):
            return None
        doc = yaml.safe_load(storage.read_bytes(spec_uri))
    except (StorageError, yaml.YAMLError) as exc:
        raise UsageError(f"{what}: cannot read {spec_uri}: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{what}: {spec_uri} is not an MLTable mapping")
    _check_transformations(doc.get("transformations") or [], spec_uri, what)
    paths = doc.get("paths") or []
    if not isinstance(paths, list) or len(paths) != 1 or not isinstance(paths[0], dict):
        raise UsageError(
            f"{what}: {spec_uri} must name exactly one entry under paths:",
            "put the files in one folder and name it with `- folder: ./data`",
        )
    absolute = _absolute(paths[0])
    if absolute:
        return absolute
    relative = _relative(paths[0], spec_uri, what)
    return uri if relative == "." else join_uri(uri, *relative.split("/"))


def _absolute(entry: dict[str, Any]) -> str:
    value = next(iter(entry.values()), "")
    return value if isinstance(value, str) and "://" in value else ""


def _relative(entry: dict[str, Any], spec_uri: str, what: str) -> str:
    if isinstance(entry.get("file"), str):
        return entry["file"].removeprefix("./").rstrip("/") or "."
    if isinstance(entry.get("folder"), str):
        return entry["folder"].removeprefix("./").rstrip("/") or "."
    pattern = entry.get("pattern")
    match = _PATTERN.fullmatch(pattern) if isinstance(pattern, str) else None
    if match is None:
        raise UsageError(
            f"{what}: {spec_uri}: paths entry {entry} is not a file, a folder or a pattern like ./*.csv",
            "name a file or a folder instead",
        )
    return match.group(1).rstrip("/") or "."


def _check_transformations(steps: list[Any], spec_uri: str, what: str) -> None:
    for step in steps:
        options: dict[str, Any] = {}
        if isinstance(step, str):
            name = step
        elif isinstance(step, dict) and step:
            name, found = next(iter(step.items()))
            options = found if isinstance(found, dict) else {}
        else:
            name = str(step)
        if name not in READERS:
            raise UsageError(
                f"{what}: {spec_uri}: transformation {name!r} is not supported here",
                f"batchfleet reads MLTable files with {', '.join(READERS)}; apply other steps in run()",
            )
        delimiter = options.get("delimiter", ",")
        if name == "read_delimited" and delimiter != ",":
            raise UsageError(f"{what}: {spec_uri}: read_delimited delimiter {delimiter!r}", "batchfleet reads ',' only")
