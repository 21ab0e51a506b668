"""Resume a failed fleet job: only batches without a committed part run again; the output is complete."""

from __future__ import annotations

from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    assert_exactly_once,
    batch_of,
    committed_ids,
    expected_lines,
    only_job,
    plan,
    starts,
    state,
)
from tests.fleet_helpers import run_cli, workers

pytestmark = CHAOS

BROKEN = "item00029.txt"  # in the last batch, so most others commit before it fails the job


def test_resume_runs_only_the_failed_batches(local_job: LocalJobFactory) -> None:
    job = local_job(30, delay=0.02, broken={BROKEN}, broken_flag="broken")
    (job.root / "broken").write_text("until the fix")
    settings = ("--mini_batch_size", "3", "--run_max_try", "1", "--allowed_failed_count", "0")
    with workers(job.url, job.logs, job.env, ["node-a"], 1):
        first = run_cli(*job.run_args(*settings), env=job.env, timeout=120)
        assert first.returncode == 1, first.stdout + first.stderr
        job_id = only_job(job.store)
        area = job.area(job_id)
        failed = batch_of(area)[BROKEN]
        assert state(area)["state"] == "failed" and state(area)["batches_failed"] == 1
        kept = committed_ids(str(area))
        # Batches run out of plan order once handed back (see policy.keeps_packed): some may never start.
        assert failed not in kept and kept < set(plan(area)) and len(kept) >= 3, kept
        before = starts(job.calls)
        (job.root / "broken").unlink()  # the fix
        second = run_cli(*job.attach_args("resume", job_id), env=job.env, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_exactly_once(job.merged(), expected_lines(job.count))
    ran_again = starts(job.calls) - before
    missing = {item for batch, items in plan(area).items() if batch not in kept for item in items}
    assert set(ran_again) == missing and set(ran_again.values()) == {1}, ran_again
    assert state(area)["reused"] == len(kept) and state(area)["state"] == "succeeded"
    assert f"({len(kept)} reused from an earlier run)" in (job.output / "logs" / "job_result.txt").read_text()
