"""kill -9 the coordinator mid-job; `batchfleet follow JOB` carries on from the store and the queues."""

from __future__ import annotations

import time

from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    assert_exactly_once,
    expected_lines,
    kill_group,
    only_job,
    report_rows,
    start_coordinator,
    starts,
    state,
    total_starts,
    wait_exit,
)
from tests.fleet_helpers import wait_for, workers

pytestmark = CHAOS


def test_coordinator_killed_and_followed_again(local_job: LocalJobFactory) -> None:
    job = local_job(300, delay=0.1)
    first, second = job.root / "run.log", job.root / "follow.log"
    with workers(job.url, job.logs, job.env, ["node-a", "node-b"]):
        run = start_coordinator(*job.run_args("--mini_batch_size", "2"), env=job.env, log=first)
        job_id = only_job(job.store)
        assert wait_for(lambda: total_starts(job.calls) >= 40, 40), "the job did not start"
        kill_group(run)
        time.sleep(2)  # batches commit and report while no coordinator listens
        before = total_starts(job.calls)
        assert before < job.count, "the job finished before the coordinator was killed; make it longer"
        follow = start_coordinator(*job.attach_args("follow", job_id), env=job.env, log=second)
        rc = wait_exit(follow, 120, second)
    assert rc == 0, second.read_text()
    assert_exactly_once(job.merged(), expected_lines(job.count))
    # no worker failed, so an item run twice would mean the restarted coordinator published it again
    ran = starts(job.calls)
    assert len(ran) == job.count and set(ran.values()) == {1}, ran.most_common(3)
    area = job.area(job_id)
    assert state(area)["state"] == "succeeded" and state(area)["batches_committed"] == 150
    assert len(report_rows(job.output, "processed_mini-batches.csv")) == 150
