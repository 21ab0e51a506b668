"""`batchfleet status` exit codes a scheduler can use, and `--wait`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import batchfleet
from tests.unit.test_status_cli import write_state


@pytest.mark.parametrize(("state", "code"), [("succeeded", 0), ("failed", 1), ("cancelled", 3), ("running", 4)])
def test_each_state_has_its_exit_code(tmp_path: Path, state: str, code: int) -> None:
    write_state(tmp_path, f"{state}-job", state=state)
    for flags in ((), ("--json",), ("--wait",)):
        if state == "running" and flags == ("--wait",):
            continue  # waits for the end: see test_wait_blocks_until_the_job_ends
        result = batchfleet("status", f"{state}-job", "--store", tmp_path, *flags)
        assert result.code == code, (flags, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_submitted_job_without_state_is_running(tmp_path: Path) -> None:
    (tmp_path / "queued-job").mkdir()
    (tmp_path / "queued-job" / "job.json").write_text("{}")
    result = batchfleet("status", "queued-job", "--store", tmp_path, "--json")
    assert result.code == 4, result.stderr
    assert json.loads(result.stdout)["state"] == "submitted"


def test_an_unknown_job_is_a_usage_error(tmp_path: Path) -> None:
    result = batchfleet("status", "nothing-here", "--store", tmp_path, "--wait")
    assert result.code == 2 and len(result.error_lines) == 1, result.stderr


def test_wait_blocks_until_the_job_ends(tmp_path: Path) -> None:
    folder = write_state(tmp_path, "live-job")
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchfleet", "status", "live-job", "--store", str(tmp_path), "--wait", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)
        assert proc.poll() is None, proc.communicate()  # still waiting: the job runs
        for _ in range(3):  # the coordinator keeps writing: still running
            state = json.loads((folder / "state.json").read_text())
            (folder / "state.json").write_text(json.dumps(state | {"updated": time.time()}))
            time.sleep(0.5)
        assert proc.poll() is None
        (folder / "state.json").write_text(json.dumps(state | {"state": "cancelled", "updated": time.time()}))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert json.loads(out)["state"] == "cancelled"


def test_wait_gives_up_on_a_silent_coordinator(tmp_path: Path) -> None:
    write_state(tmp_path, "orphan-job", updated=time.time() - 100)
    result = batchfleet("status", "orphan-job", "--store", tmp_path, "--wait", timeout=30)
    assert result.code == 4
    assert "batchfleet follow orphan-job" in result.stderr
