"""A worker dies after its commit but before its ack: the batch runs again, its rows appear once."""

from __future__ import annotations

import os
import signal

from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    assert_exactly_once,
    batch_of,
    expected_lines,
    frames,
    kill_group,
    node_of,
    only_job,
    report_rows,
    running,
    start_coordinator,
    starts,
    state,
    wait_exit,
)
from tests.fleet_helpers import start_worker, wait_for, workers

pytestmark = CHAOS

TARGET = "item00030.txt"


def test_commit_then_death_before_ack(local_job: LocalJobFactory) -> None:
    job = local_job(60, delay=0.05, slow={TARGET: 2.0})
    log = job.root / "run.log"
    with workers(job.url, job.logs, job.env, ["node-a"]) as procs:
        run = start_coordinator(*job.run_args("--mini_batch_size", "2"), env=job.env, log=log)
        area = job.area(only_job(job.store))
        target = batch_of(area)[TARGET]
        assert wait_for(lambda: TARGET in running(job.calls, "node-a"), 60), "node-a never ran the target"
        # Freeze the node (not its child): the child commits, the node can neither report nor ack.
        os.kill(procs[0].pid, signal.SIGSTOP)
        assert wait_for(lambda: (target, "node-a") in {(r.batch_id, node_of(r)) for r in frames(str(area))}, 15), (
            "the child did not commit the target batch"
        )
        kill_group(procs[0])
        procs.append(start_worker(job.url, "node-b", job.logs, job.env))
        rc = wait_exit(run, 120, log)
    assert rc == 0, log.read_text()
    assert_exactly_once(job.merged(), expected_lines(job.count))
    again = sorted(
        (r.attempt, r.ref.split("/parts/")[1].split("/")[0]) for r in frames(str(area)) if r.batch_id == target
    )
    assert again == [(1, "node-a"), (2, "node-b")], again
    assert starts(job.calls)[TARGET] == 2
    row = next(r for r in report_rows(job.output, "processed_mini-batches.csv") if int(r["batch_id"]) == target)
    assert row["node"] == "node-b" and row["tries"] == "2", row
    records = frames(str(area))
    print(f"\nbatches committed twice: {len(records) - len({r.batch_id for r in records})}; "
          f"duplicates reported: {state(area)['duplicates']}")  # fmt: skip
