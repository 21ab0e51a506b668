"""A poison batch (always raises) and a hanging one (past run_invocation_timeout) among good ones."""

from __future__ import annotations

import pytest

from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    assert_exactly_once,
    batch_of,
    expected_lines,
    only_job,
    plan,
    report_rows,
    state,
)
from tests.fleet_helpers import run_cli, workers

pytestmark = CHAOS

POISON, HANG = "item00005.txt", "item00012.txt"
SETTINGS = ("--mini_batch_size", "2", "--run_max_try", "3", "--run_invocation_timeout", "2")


@pytest.mark.parametrize("allowed", [2, 1])
def test_poison_and_hang_use_their_tries_and_thresholds_decide(local_job: LocalJobFactory, allowed: int) -> None:
    job = local_job(40, delay=0.05, poison={POISON}, hang={HANG})
    with workers(job.url, job.logs, job.env, ["node-a", "node-b"]):
        result = run_cli(*job.run_args(*SETTINGS, "--allowed_failed_count", str(allowed)), env=job.env, timeout=120)
    area = job.area(only_job(job.store))
    batches = batch_of(area)
    bad = {batches[POISON]: "poison item", batches[HANG]: "TimeoutError: run() exceeded run_invocation_timeout=2s"}
    attempts = report_rows(job.output, "attempts.csv")
    for batch, error in bad.items():
        tries = [row for row in attempts if int(row["batch_id"]) == batch]
        assert [int(row["attempt"]) for row in tries] == [1, 2, 3], tries
        assert [row["outcome"] for row in tries] == ["retry", "retry", "failed"], tries
        assert all(error in row["error"] for row in tries), tries
    assert all(row["outcome"] == "committed" for row in attempts if int(row["batch_id"]) not in bad)
    assert state(area)["batches_failed"] == 2
    if allowed == 2:
        assert result.returncode == 0, result.stderr
        assert state(area)["state"] == "succeeded"
        failed = {int(row["batch_id"]) for row in report_rows(job.output, "processed_mini-batches.csv")
                  if row["status"] == "failed"}  # fmt: skip
        assert failed == set(bad)
        lost = [name for batch in bad for name in plan(area)[batch]]
        assert_exactly_once(job.merged(), expected_lines(job.count, skip=lost))
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "2 failed mini-batches exceed allowed_failed_count=1" in result.stderr
        assert state(area)["state"] == "failed"
        assert "allowed_failed_count=1" in (job.output / "logs" / "job_result.txt").read_text()
        assert not (job.output / "parallel_run_step.txt").exists()
