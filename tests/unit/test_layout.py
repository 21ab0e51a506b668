"""The tree's rules, checked on the source: who imports whom, and one owner of the job area's names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "coordinator", "worker", "batchfleet")


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _imported_packages(path: Path) -> set[str]:
    """Top-level project packages a module imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {name.split(".", 1)[0] for name in names if name.split(".", 1)[0] in PACKAGES}
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("common", {"coordinator", "worker", "batchfleet"}), ("worker", {"coordinator", "batchfleet"})],
)
def test_lower_layers_do_not_import_higher_ones(package: str, forbidden: set[str]) -> None:
    offenders = {p.relative_to(REPO).as_posix(): _imported_packages(p) & forbidden for p in _modules(package)}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_only_the_embedded_runner_imports_the_worker() -> None:
    importers = [p.relative_to(REPO).as_posix() for p in _modules("coordinator") if "worker" in _imported_packages(p)]
    assert importers == ["coordinator/embedded.py"]


def test_the_job_area_names_live_in_one_module() -> None:
    owners = [
        p.relative_to(REPO).as_posix()
        for package in PACKAGES
        for p in _modules(package)
        if '"job.json"' in p.read_text() or '"plan.jsonl"' in p.read_text() or '"state.json"' in p.read_text()
    ]
    assert owners == ["common/jobarea.py"]


def test_storage_modules_do_not_import_each_other_in_a_circle() -> None:
    base = _imports_of(REPO / "common" / "storage" / "base.py")
    assert not base & {"common.storage.local", "common.storage.s3", "common.storage.registry"}


def _imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found
