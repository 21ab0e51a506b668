"""`batchfleet status`, `list` and `cancel` against real embedded jobs, run as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import batchfleet, make_component

FAILING_ENTRY = """\
import os

def run(mini_batch):
    for path in mini_batch:
        if path.endswith("item002.txt"):
            raise ValueError("poison item " + os.path.basename(path))
    return [os.path.basename(p) for p in mini_batch]
"""

SLOW_ENTRY = """\
import os, time

def run(mini_batch):
    time.sleep(0.5)
    return [os.path.basename(p) for p in mini_batch]
"""


def run_job(root: Path, store: Path, entry: str | None = None, *flags: str) -> str:
    """Run a 5-file component to its end; returns the job id."""
    spec = make_component(root, entry=entry) if entry else make_component(root)
    result = batchfleet(
        "run", spec, "--input", f"data={root / 'data'}", "--output", f"scored={root / 'out'}",
        "--store", store, "--no-progress", "--mini_batch_size", "2", *flags,
    )  # fmt: skip
    match = re.search(r"^job (\S+) (succeeded|failed)", result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    return match.group(1)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two finished jobs in one store: one clean, one with a failed mini-batch."""
    base = tmp_path_factory.mktemp("jobs")
    store = base / "store"
    good = run_job(base / "good", store)
    time.sleep(1.1)  # distinct start times, so `list` has an order to check
    bad = run_job(base / "bad", store, FAILING_ENTRY, "--run_max_try", "1")
    return {"store": store, "good": good, "bad": bad}


def write_state(store: Path, job_id: str, **fields: Any) -> Path:
    """A hand-made state record, for states a finished job cannot be in."""
    now = time.time()
    state = {
        "job_id": job_id, "name": "made", "state": "running", "reason": None, "started": now - 60,
        "updated": now, "batches_total": 10, "batches_committed": 3, "batches_failed": 0,
        "batches_pending": 7, "items_succeeded": 30, "items_failed": 0, "items_per_second": 0.5,
        "eta_seconds": 140.0, "output": "/data/out", "nodes": {}, "error_groups": [],
    } | fields  # fmt: skip
    folder = store / job_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text(json.dumps(state))
    return folder


def test_status_of_a_finished_job(jobs: dict[str, Any]) -> None:
    result = batchfleet("status", jobs["good"], "--store", jobs["store"])
    assert result.code == 0, result.stderr
    out = result.stdout
    assert jobs["good"] in out
    assert "succeeded" in out
    assert "3 done, 0 failed, 0 never ran of 3" in out
    assert "5 succeeded, 0 failed" in out
    assert "local" in out and "ago" in out  # the node table with its last-seen time
    assert "errors" not in out


def test_status_shows_the_first_error_of_each_group(jobs: dict[str, Any]) -> None:
    result = batchfleet("status", jobs["bad"], "--store", jobs["store"])
    assert result.code == 0, result.stderr
    out = result.stdout
    assert "2 done, 1 failed, 0 never ran of 3" in out
    assert "ValueError: poison item item002.txt" in out and "ValueError: ValueError" not in out
    assert re.search(r"at entry\.py:\d+ in run", out), out
    assert re.search(r"│\s+1\s+│", out), out  # the group's count; batch 1 is its only batch


def test_status_json(jobs: dict[str, Any]) -> None:
    result = batchfleet("status", jobs["bad"], "--store", jobs["store"], "--json")
    assert result.code == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["job_id"] == jobs["bad"]
    assert state["batches_total"] == 3 and state["batches_failed"] == 1
    assert state["nodes"]["local"]["batches"] == 3
    [group] = state["error_groups"]
    assert group["error_type"] == "ValueError" and group["count"] == 1 and group["batch_ids"] == [1]


def test_status_of_an_unknown_job(jobs: dict[str, Any]) -> None:
    result = batchfleet("status", "no-such-job-20240101-000000-abcd", "--store", jobs["store"])
    assert result.code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no-such-job-20240101-000000-abcd" in result.error_lines[0]


def test_status_refuses_a_path_as_job_id(tmp_path: Path) -> None:
    result = batchfleet("status", "../etc", "--store", tmp_path)
    assert result.code == 2 and len(result.error_lines) == 1, result.stderr


def test_list_two_jobs_newest_first(jobs: dict[str, Any]) -> None:
    result = batchfleet("list", "--store", jobs["store"])
    assert result.code == 0, result.stderr
    out = result.stdout
    assert out.index(jobs["bad"]) < out.index(jobs["good"])
    assert "3/3 (1 failed)" in out and "3/3" in out
    listed = json.loads(batchfleet("list", "--store", jobs["store"], "--json").stdout)
    assert [job["job_id"] for job in listed] == [jobs["bad"], jobs["good"]]
    assert {job["state"] for job in listed} == {"succeeded"}


def test_list_of_an_empty_store(tmp_path: Path) -> None:
    result = batchfleet("list", "--store", tmp_path / "nothing")
    assert result.code == 0 and "no jobs" in result.stdout


def test_watch_returns_when_the_job_is_over(jobs: dict[str, Any]) -> None:
    result = batchfleet("status", jobs["good"], "--store", jobs["store"], "--watch", "0.2", "--json", timeout=30)
    assert result.code == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert json.loads(line)["state"] == "succeeded"


def test_silent_coordinator_is_called_out(tmp_path: Path) -> None:
    write_state(tmp_path, "stale-job", updated=time.time() - 100)
    result = batchfleet("status", "stale-job", "--store", tmp_path)
    assert result.code == 4, result.stderr  # not finished
    assert "batchfleet follow stale-job" in result.stderr
    assert re.search(r"coordinator not seen for 1m 4\ds \(stopped or killed\?\)", result.stdout), result.stdout
    fresh = batchfleet("status", write_state(tmp_path, "fresh-job").name, "--store", tmp_path)
    assert "not seen" not in fresh.stdout and "2m 20s" in fresh.stdout  # ETA of a live job


def test_status_masks_secrets(tmp_path: Path) -> None:
    secret = "s3cr3t-value-from-env"
    write_state(tmp_path, "leaky", state="failed",
                reason=f"broker amqp://bf:hunter22@rabbit:5672/ refused; key {secret}")  # fmt: skip
    env = {"AWS_SECRET_ACCESS_KEY": secret}
    for flags in ((), ("--json",)):
        result = batchfleet("status", "leaky", "--store", tmp_path, *flags, env=env)
        assert result.code == 1, result.stderr  # a failed job
        assert "hunter22" not in result.stdout and secret not in result.stdout
        assert "***" in result.stdout


def test_cancel_writes_the_marker(tmp_path: Path) -> None:
    folder = write_state(tmp_path, "live-job")
    result = batchfleet("cancel", "live-job", "--store", tmp_path)
    assert result.code == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 and "cancel requested" in result.stdout
    assert json.loads((folder / "cancel.json").read_text())["at"] > 0


def test_cancel_of_a_finished_or_unknown_job(jobs: dict[str, Any]) -> None:
    done = batchfleet("cancel", jobs["good"], "--store", jobs["store"])
    assert done.code == 0 and "already succeeded" in done.stdout
    assert not (jobs["store"] / jobs["good"] / "cancel.json").exists()
    unknown = batchfleet("cancel", "nope-job", "--store", jobs["store"])
    assert unknown.code == 2 and len(unknown.error_lines) == 1


def _wait_for_state(store: Path, proc: subprocess.Popen[str], deadline: float) -> Path:
    while time.monotonic() < deadline:
        found = list(store.glob("*/state.json"))
        if found:
            return found[0]
        assert proc.poll() is None, "the job ended before it wrote its state"
        time.sleep(0.2)
    raise AssertionError("no state.json within the deadline")


def test_cancel_stops_a_running_job(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "comp", entry=SLOW_ENTRY, files=60)
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if k != "BATCHFLEET_BROKER"}
    cmd = [sys.executable, "-m", "batchfleet", "run", str(spec),
           "--input", f"data={tmp_path / 'comp' / 'data'}", "--output", f"scored={tmp_path / 'out'}",
           "--store", str(store), "--no-progress",
           "--mini_batch_size", "1", "--process_count_per_node", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        state_file = _wait_for_state(store, proc, time.monotonic() + 60)
        job_id = state_file.parent.name
        assert json.loads(state_file.read_text())["state"] == "running"
        cancel = batchfleet("cancel", job_id, "--store", store)
        assert cancel.code == 0 and "cancel requested" in cancel.stdout, cancel.stderr
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stdout + stderr
    assert "cancelled" in stdout + stderr
    assert f"see {tmp_path / 'out' / 'logs' / 'job_result.txt'}" in stderr  # the real path
    assert "never ran" in stdout
    final = json.loads(state_file.read_text())
    assert final["state"] == "cancelled"
    assert final["batches_committed"] < 60  # stopped early: all 60 would take 30 s
