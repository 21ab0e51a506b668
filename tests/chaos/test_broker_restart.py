"""Restart rabbitmq-server in the middle of a job: every item still lands exactly once."""

from __future__ import annotations

from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    Stopwatch,
    assert_exactly_once,
    expected_lines,
    frames,
    only_job,
    report_rows,
    start_coordinator,
    state,
    total_starts,
    wait_exit,
)
from tests.fleet_helpers import wait_for, workers

pytestmark = CHAOS


def test_rabbitmq_restart_mid_job(local_job: LocalJobFactory, rabbitmq) -> None:  # type: ignore[no-untyped-def]
    job = local_job(300, delay=0.1)
    log = job.root / "run.log"
    with workers(job.url, job.logs, job.env, ["node-a", "node-b"]):
        run = start_coordinator(*job.run_args("--mini_batch_size", "2"), env=job.env, log=log)
        assert wait_for(lambda: total_starts(job.calls) >= 40, 40), "the job did not start"
        clock = Stopwatch()
        rabbitmq.restart()
        down = clock()
        assert run.poll() is None, "the job ended before the broker came back; make it longer"
        rc = wait_exit(run, 120, log)
        after = clock() - down
    assert rc == 0, log.read_text()
    assert_exactly_once(job.merged(), expected_lines(job.count))
    area = job.area(only_job(job.store))
    records = frames(str(area))
    twice = len(records) - len({r.batch_id for r in records})
    tries = max(int(row["tries"]) for row in report_rows(job.output, "processed_mini-batches.csv"))
    print(f"\nbroker down {down:.1f}s, job done {after:.1f}s later; batches committed twice: {twice}; "
          f"max tries {tries}; duplicates reported {state(area)['duplicates']}")  # fmt: skip
    assert state(area)["batches_failed"] == 0
