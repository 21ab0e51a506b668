"""Honest summaries: job_result.txt, report.html, state and the closing line say what was merged (or that
nothing was, and why), with real paths, and how many mini-batches never ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import StorageError
from coordinator.report.joblogs import Summary, final_line, merged_text
from tests.cli_helpers import batchfleet, make_component
from tests.runtime_helpers import make_job

# Every batch fails, but only the first two fail at once: a node runs ahead of the coordinator (each
# child's pipe holds tasks, reports travel in bundles, a drain is folded in whole before the
# thresholds are checked), so batches that fail in microseconds could all be tried before the abort.
# Later calls wait until the coordinator has recorded both failures (failed/<batch>.json), which it
# does in the same drain whose end breaks the threshold, so the rest of the job never runs.
FAIL_TWO_THEN_WAIT = """\
import glob, os, time

STORE = {store!r}
calls = 0

def run(mini_batch):
    global calls
    calls += 1
    deadline = time.monotonic() + 120
    while calls > 2 and len(glob.glob(os.path.join(STORE, "*", "failed", "*.json"))) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the coordinator never recorded the first two failures")
        time.sleep(0.05)
    raise ValueError("bad batch")
"""

SLOW = """\
import os, time

def run(mini_batch):
    time.sleep(0.5)
    return [os.path.basename(p) for p in mini_batch]
"""


def summary(**fields: object) -> Summary:
    base: dict[str, object] = {
        "job_id": "j-1", "state": "failed", "reason": "too many failures", "started": 0.0, "finished": 1.0,
        "batches_total": 20, "batches_committed": 0, "batches_failed": 2, "items_total": 20,
        "items_succeeded": 0, "items_failed": 2, "output_uri": "/data/out", "parts_uri": "/store/j-1/parts",
    }  # fmt: skip
    return Summary(**(base | fields))  # type: ignore[arg-type]


def test_an_aborted_job_names_the_batches_that_never_ran() -> None:
    line = final_line(summary())
    assert "0/20 mini-batches committed, 2 failed, 18 never ran" in line
    assert "0 items succeeded, 2 failed, 18 not run" in line
    assert "nothing merged (see /data/out/logs/job_result.txt)" in line
    assert summary().as_dict()["batches_never_ran"] == 18


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {
                "state": "succeeded",
                "output": "/data/out/parallel_run_step.txt",
                "rows": 7,
                "batches_committed": 20,
                "batches_failed": 0,
            },
            "7 rows merged into /data/out/parallel_run_step.txt",
        ),
        (
            {"state": "succeeded", "output_action": "summary_only", "batches_committed": 20, "batches_failed": 0},
            "nothing merged: output_action is summary_only",
        ),
        ({}, "nothing merged: the job failed"),
        (
            {"state": "cancelled", "batches_committed": 4},
            "nothing merged: the job cancelled; the 4 committed mini-batches are kept in /store/j-1/parts "
            "(`batchfleet resume j-1` runs the rest and merges)",
        ),
    ],
)
def test_what_was_merged(fields: dict[str, object], expected: str) -> None:
    assert merged_text(summary(**fields)).startswith(expected)


def run(tmp_path: Path, entry: str, *flags: str, files: int = 20):  # type: ignore[no-untyped-def]
    spec = make_component(tmp_path / "comp", entry=entry, files=files)
    return batchfleet(
        "run", spec, "--input", f"data={tmp_path / 'comp' / 'data'}", "--output", f"scored={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress", "--mini_batch_size", "1", *flags,
    )  # fmt: skip


def test_an_early_abort_says_what_never_ran_everywhere(tmp_path: Path) -> None:
    entry = FAIL_TWO_THEN_WAIT.format(store=str(tmp_path / "store"))
    result = run(tmp_path, entry, "--run_max_try", "1", "--allowed_failed_count", "1", "--process_count_per_node",
                 "1")  # fmt: skip
    assert result.code == 1, result.stderr
    out = tmp_path / "out"
    job_result = out / "logs" / "job_result.txt"
    assert f"see {job_result}" in result.error_lines[0]
    assert "0/20 mini-batches committed, 2 failed, 18 never ran" in result.stdout
    assert f"nothing merged (see {job_result})" in result.stdout
    text = job_result.read_text()
    assert "never ran (the job ended first)" in text
    assert "Output: nothing merged: the job failed." in text
    assert f"Logs: {out / 'logs'}" in text
    state = json.loads(next((tmp_path / "store").glob("*/state.json")).read_text())
    assert state["batches_never_ran"] == 20 - state["batches_committed"] - state["batches_failed"] == 18
    assert state["output"] == str(out)  # the output location, though nothing was merged
    html = (out / "logs" / "report.html").read_text()
    assert "Batches never ran" in html and "Output: nothing merged: the job failed" in html


def test_a_summary_only_job_says_nothing_was_merged_and_why(tmp_path: Path) -> None:
    result = run(tmp_path, "def run(b):\n    return b\n", "--output_action", "summary_only", files=3)
    assert result.code == 0, result.stderr
    assert "nothing merged" in result.stdout
    text = (tmp_path / "out" / "logs" / "job_result.txt").read_text()
    assert "Output: nothing merged: output_action is summary_only" in text
    assert "summary_only." not in text.replace("is summary_only", "")


def test_a_succeeded_job_names_its_merged_file(tmp_path: Path) -> None:
    result = run(tmp_path, "def run(b):\n    return b\n", files=3)
    assert result.code == 0, result.stderr
    merged = tmp_path / "out" / "parallel_run_step.txt"
    assert f"output {merged} (3 rows)" in result.stdout
    assert f"Output: 3 rows merged into {merged}." in (tmp_path / "out" / "logs" / "job_result.txt").read_text()


def test_a_failed_merge_fails_the_job_with_its_reason(tmp_path: Path) -> None:
    from coordinator import runner

    class BrokenMerger:
        def finish(self, keep: bool) -> None:
            raise StorageError("disk full while writing parallel_run_step.txt")

    done = summary(state="succeeded", batches_committed=20, batches_failed=0)
    merged, error = runner._finish_merge(make_job(tmp_path, tmp_path, tmp_path), BrokenMerger())  # type: ignore[arg-type]
    runner.merged_into(done, merged, error)
    assert done.state == "failed" and "merging the output failed: disk full" in str(done.reason)
    assert "nothing merged: the job failed" in merged_text(done)
