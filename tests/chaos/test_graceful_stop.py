"""SIGTERM a worker mid-job: it finishes what it is running, hands the rest back and exits 0."""

from __future__ import annotations

import signal
import time

import pytest

from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    assert_exactly_once,
    batch_of,
    expected_lines,
    finished_by,
    last_mark_time,
    only_job,
    report_rows,
    running,
    start_coordinator,
    total_starts,
    wait_exit,
)
from tests.fleet_helpers import start_worker, wait_for, workers

pytestmark = CHAOS

GRACE = 6.0


@pytest.mark.parametrize("tries", [3, 1])
def test_sigterm_drains_the_worker(local_job: LocalJobFactory, tries: int) -> None:
    """With run_max_try=1 a batch handed back must still run: a stop is not a failed try."""
    job = local_job(120, delay=0.3)
    log = job.root / "run.log"
    with workers(job.url, job.logs, job.env, ["node-b"]) as procs:
        node_a = start_worker(job.url, "node-a", job.logs, job.env, 2, "--grace", str(GRACE))
        procs.append(node_a)
        args = job.run_args("--mini_batch_size", "2", "--run_max_try", str(tries))
        run = start_coordinator(*args, env=job.env, log=log)
        assert wait_for(lambda: total_starts(job.calls) >= 20 and len(running(job.calls, "node-a")) >= 1, 60)
        in_run = running(job.calls, "node-a")
        node_a.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = node_a.wait(GRACE + 10)
        drained = time.monotonic() - signalled
        rc = wait_exit(run, 120, log)
        ended = time.time()
    print(f"\nnode-a drained in {drained:.1f}s; coordinator exited {ended - last_mark_time(job.calls):.1f}s "
          "after the last item finished")  # fmt: skip
    assert code == 0 and drained <= GRACE + 2, (code, drained)
    assert rc == 0, log.read_text()
    assert_exactly_once(job.merged(), expected_lines(job.count))
    # what node-a was running when told to stop was finished by the same process, not killed or retried
    assert all(finished_by(job.calls, name, pid) for name, pid in in_run.items()), in_run
    processed = {int(row["batch_id"]): row for row in report_rows(job.output, "processed_mini-batches.csv")}
    batches = batch_of(job.area(only_job(job.store)))
    for name in in_run:
        row = processed[batches[name]]
        assert row["node"] == "node-a" and row["tries"] == "1", row
    # handing work back on a graceful stop is no failure: no batch may be charged a try for it
    charged = {batch: row["tries"] for batch, row in processed.items() if row["tries"] != "1"}
    assert not charged, f"batches charged a try by the graceful stop: {charged}"
    attempts = report_rows(job.output, "attempts.csv")
    assert not [row for row in attempts if row["node"] == "node-a" and row["outcome"] != "committed"]
    # node-a said goodbye when it left: the coordinator must not wait for it again at the end
    assert ended - last_mark_time(job.calls) < 15, "the coordinator waited for a node that had already left"
