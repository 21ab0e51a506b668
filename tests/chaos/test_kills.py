"""kill -9 mid-batch: a worker's child processes, then a whole worker node."""

from __future__ import annotations

import time

from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    Stopwatch,
    assert_exactly_once,
    batch_of,
    coordinator_run,
    expected_lines,
    freeze_when_busy,
    kill_child_in_run,
    kill_group,
    marks,
    only_job,
    report_rows,
    spawned_children,
    state,
    wait_exit,
    wait_value,
)
from tests.fleet_helpers import start_worker, wait_for, workers
from tests.servers import tail

pytestmark = CHAOS


def test_kill_children_mid_batch(local_job: LocalJobFactory) -> None:
    # Each kill needs a child of the chosen node inside run(). On a free-running job the node may
    # have no work left by the last round (the other node took the tail of the queue), so each
    # round pauses run() (every child with a batch waits inside it), kills, and lets the job go on.
    job = local_job(300, delay=0.1, pause="pause")
    assert job.entry.pause is not None
    pause = job.entry.pause
    clock = Stopwatch()
    log = job.root / "run.log"
    killed: list[int] = []
    with workers(job.url, job.logs, job.env, ["node-a", "node-b"]) as procs:
        args = job.run_args("--mini_batch_size", "2", "--run_max_try", "5")
        nodes = dict(zip(["node-a", "node-b"], procs, strict=True))
        with coordinator_run(*args, env=job.env, log=log) as run:
            for round_ in range(4):
                node = ["node-a", "node-b"][round_ % 2]

                def strike(name: str = node) -> int | None:
                    return kill_child_in_run(job.calls, name, spawned_children(nodes[name]))

                pause.touch()
                # the first round waits for the job to start (workers, planning, init())
                pid = wait_value(strike, 60 if round_ == 0 else 20)
                where = job.logs / f"{node}.log"
                assert pid is not None, f"no busy child on {node} to kill; its log:\n{tail(where, 60)}"
                killed.append(pid)
                pause.unlink()
                time.sleep(1.0)
            rc = wait_exit(run, 120, log)
    print(f"\nchild kills: {len(killed)} in {clock():.1f}s")
    assert rc == 0, log.read_text()
    assert_exactly_once(job.merged(), expected_lines(job.count))
    attempts = report_rows(job.output, "attempts.csv")
    died = [row for row in attempts if row["error"].startswith("ProcessDied")]
    # every kill landed inside run(): each costs exactly the batch that child was running, one try
    assert len(died) == len(killed), died
    assert all(row["outcome"] == "retry" for row in died)
    area = job.area(only_job(job.store))
    assert state(area)["batches_failed"] == 0
    processed = report_rows(job.output, "processed_mini-batches.csv")
    assert len(processed) == 150 and all(row["status"] == "succeeded" for row in processed)


def test_kill_whole_node_and_replace_it(local_job: LocalJobFactory) -> None:
    job = local_job(240, delay=0.1)
    log = job.root / "run.log"
    args = job.run_args("--mini_batch_size", "2")
    with (
        workers(job.url, job.logs, job.env, ["node-a", "node-b"]) as procs,
        coordinator_run(*args, env=job.env, log=log) as run,
    ):
        node_a = procs[0]
        assert wait_for(lambda: len(marks(job.calls)) >= 40, 40), "the job did not start"
        cut_short = freeze_when_busy(node_a, job.calls, "node-a")
        kill_group(node_a)
        node_c = start_worker(job.url, "node-c", job.logs, job.env)
        procs.append(node_c)
        clock = Stopwatch()
        rc = wait_exit(run, 120, log)
        print(f"\njob ended {clock():.1f}s after node-a was killed")
    assert rc == 0, log.read_text()
    assert_exactly_once(job.merged(), expected_lines(job.count))
    processed = {int(row["batch_id"]): row for row in report_rows(job.output, "processed_mini-batches.csv")}
    assert len(processed) == 120
    nodes = {row["node"] for row in processed.values()}
    # the replacement took work; node-a may have been killed before any report of its got out
    assert "node-c" in nodes and nodes <= {"node-a", "node-b", "node-c"}, nodes
    batches = batch_of(job.area(only_job(job.store)))
    for name in cut_short:
        row = processed[batches[name]]
        # the batch node-a died in ran again elsewhere, on a counted second try
        assert row["node"] != "node-a" and int(row["tries"]) >= 2, (name, row)
        assert any(node != "node-a" for tag, node, _ in marks(job.calls)[name] if tag == "S")
