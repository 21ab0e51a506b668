"""Restart rabbitmq-server in the middle of a job: every item still lands exactly once."""

from __future__ import annotations

from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    Stopwatch,
    assert_exactly_once,
    coordinator_run,
    expected_lines,
    frames,
    only_job,
    report_rows,
    state,
    total_starts,
    wait_exit,
)
from tests.fleet_helpers import wait_for, workers

pytestmark = CHAOS


def test_rabbitmq_restart_mid_job(local_job: LocalJobFactory, rabbitmq) -> None:  # type: ignore[no-untyped-def]
    job = local_job(300, delay=0.1, pause="pause")
    assert job.entry.pause is not None
    pause = job.entry.pause
    log = job.root / "run.log"
    args = job.run_args("--mini_batch_size", "2")
    with workers(job.url, job.logs, job.env, ["node-a", "node-b"]), coordinator_run(*args, env=job.env, log=log) as run:
        assert wait_for(lambda: total_starts(job.calls) >= 40, 40), "the job did not start"
        clock = Stopwatch()
        # A clean stop takes rabbitmqctl seconds to even begin on a loaded machine, and the job could
        # end meanwhile: run() waits until the broker is down, then the job goes on without it.
        pause.touch()
        rabbitmq.stop()
        pause.unlink()
        assert run.poll() is None, "the job ended while run() was paused"
        # The job may end before start() returns: the node serves clients before rabbitmqctl
        # await_startup (another slow start on a loaded machine) says so.
        rabbitmq.start()
        down = clock()
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
