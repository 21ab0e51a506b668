"""Spec fixtures and helpers shared by the test_spec_* modules."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from common.errors import BatchfleetError

FIXTURES = Path(__file__).parent / "fixtures_spec"
COMPONENT = FIXTURES / "component" / "spec.yaml"
V2_JOB = FIXTURES / "v2" / "job.yaml"

Mutate = Callable[[dict[str, Any]], Any]


def one_line(exc: BatchfleetError) -> str:
    text = str(exc)
    assert "\n" not in text and "\n" not in exc.line()
    assert "Traceback" not in text
    return exc.line()


def copy_case(tmp_path: Path, source: Path, mutate: Mutate, entry: str | None = None) -> Path:
    """Copy a fixture folder into tmp_path, change its YAML (or replace its text), return the YAML."""
    shutil.copytree(source.parent, tmp_path, dirs_exist_ok=True)
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    replaced = mutate(doc)
    text = replaced if isinstance(replaced, str) else yaml.safe_dump(doc, sort_keys=False)
    target = tmp_path / source.name
    target.write_text(text, encoding="utf-8")
    if entry is not None:
        spec_entry = doc["parallel"]["entry"] if "parallel" in doc else "script/" + doc["task"]["entry_script"]
        (tmp_path / spec_entry).write_text(entry, encoding="utf-8")
    return target
