"""Scratch folders of coordinators killed mid-job are swept by the next one; live ones are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from coordinator import scratch
from coordinator.scratch import scratch_dir, sweep_scratch


def gone_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def folder(root: Path, name: str, age: float = 3600.0) -> Path:
    path = root / name
    path.mkdir()
    (path / "attempts.csv").write_text("batch_id\n")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_only_folders_of_gone_processes_left_alone_a_while_are_swept(tmp_path: Path) -> None:
    dead = gone_pid()
    swept = [folder(tmp_path, f"bf-{kind}-{dead}-x1") for kind in ("plan", "trylog", "merge", "node")]
    mine = folder(tmp_path, f"bf-trylog-{os.getpid()}-x2")
    fresh = folder(tmp_path, f"bf-plan-{dead}-x3", age=0)  # maybe a pid from another namespace
    other = [folder(tmp_path, f"bf-debug-{dead}-x4"), folder(tmp_path, "bf-plan-x5"), folder(tmp_path, "mine")]
    (tmp_path / f"bf-merge-{dead}-file").write_text("not a folder")
    assert sweep_scratch(tmp_path) == 4
    assert not any(path.exists() for path in swept)
    assert all(path.exists() for path in (mine, fresh, *other, tmp_path / f"bf-merge-{dead}-file"))


def test_scratch_folders_carry_the_process_id(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(scratch.tempfile, "tempdir", str(tmp_path))
    made = scratch_dir("trylog")
    assert made.parent == tmp_path and made.name.startswith(f"bf-trylog-{os.getpid()}-")
    assert sweep_scratch() == 0 and made.exists()


def test_a_missing_temp_folder_sweeps_nothing(tmp_path: Path) -> None:
    assert sweep_scratch(tmp_path / "nothing") == 0
