"""A three-node RabbitMQ cluster loses a node to kill -9: clients move to the other nodes, quorum queues
elect new leaders, and nothing is lost or counted twice.

The cluster is the session's `rabbit_cluster` (tests/cluster.py, about a minute to boot), healed after
each test by the `cluster` fixture. Each process tries its URLs in the order given, so a test decides
who is connected where by the order it hands them out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from pathlib import Path

import pytest

from common.broker.base import queue_names
from common.broker.rabbitmq.broker import RabbitBroker
from tests.chaos.conftest import job_factory
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
from tests.cluster import RabbitCluster
from tests.fleet_helpers import start_worker, stop, wait_for
from tests.integration.test_broker_contract import consume, eventually, quiet

pytestmark = CHAOS


def starting_with(cluster: RabbitCluster, index: int) -> list[str]:
    """Every node's URL, node `index` first: a process given these connects there."""
    return cluster.urls[index:] + cluster.urls[:index]


def where(cluster: RabbitCluster, index: int) -> str:
    return f"127.0.0.1:{cluster.nodes[index].port}"


@pytest.mark.parametrize("victim", ["client's node and queue leader", "queue leader only"])
def test_node_killed_mid_consume_and_publish(
    cluster: RabbitCluster, victim: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Kill the node leading the job's batches queue while a consumer holds deliveries and a publisher
    waits for confirms; the client is connected to that node too, or to another one."""
    job_id = f"t{uuid.uuid4().hex[:10]}"
    names = queue_names(job_id)
    setup = RabbitBroker(cluster.urls)
    setup.declare_job(job_id, run_max_try=10)
    setup.close()
    leader = cluster.index_of(cluster.leaders(names.batches)[names.batches])
    home = leader if victim.startswith("client") else (leader + 1) % len(cluster.nodes)
    broker = RabbitBroker(starting_with(cluster, home), heartbeat=5)
    expected = {b"m%03d" % i for i in range(300)}
    broker.declare_job(job_id, run_max_try=10)
    broker.publish(names.batches, sorted(expected)[:150])
    acked: list[bytes] = []
    halt = threading.Event()
    _, sink = consume(broker, names.batches, prefetch=10)

    def work() -> None:
        while not halt.is_set():
            try:
                d = sink.get(timeout=0.2)
            except queue.Empty:
                continue
            time.sleep(0.01)
            broker.settle(d, "ack")  # settles on the dead node's connection are ignored
            acked.append(d.body)

    worker = threading.Thread(target=work)
    worker.start()
    caplog.set_level(logging.INFO, logger="common.broker.rabbitmq.io")
    try:
        eventually(lambda: len(acked) >= 30, True)
        late = threading.Thread(target=broker.publish, args=(names.batches, sorted(expected)[150:]))
        late.start()
        clock = Stopwatch()
        cluster.kill(leader)
        late.join(120)
        assert not late.is_alive(), "the publish never completed after the node loss"
        eventually(lambda: set(acked) == expected, True, timeout=120)
        took = clock()
        eventually(lambda: broker.depth(names.batches), 0, timeout=60)
        time.sleep(1)
        assert quiet(sink)
        moved = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconnected to RabbitMQ")]
        if home == leader:
            assert len(moved) == 2, moved  # the publishing and the consuming connection, to a live node
            assert not any(where(cluster, leader) in line for line in moved), moved
        else:
            assert moved == [], moved  # its node lived: only the queue's leader changed
        print(f"\n{victim}: all {len(expected)} acked {took:.1f}s after the kill, {len(acked) - len(expected)} twice")
    finally:
        halt.set()
        worker.join()
        broker.delete_job(job_id)
        broker.close()


def test_node_killed_mid_fleet_job(tmp_path: Path, cluster: RabbitCluster) -> None:
    """A coordinator and node-a on node 0, node-b on node 1; node 0 is killed mid-job. Every item
    lands exactly once and no batch fails."""
    job = job_factory(tmp_path, ",".join(starting_with(cluster, 0)))(300, delay=0.1)
    log = job.root / "run.log"
    procs = {
        name: start_worker(",".join(starting_with(cluster, home)), name, job.logs, job.env)
        for name, home in (("node-a", 0), ("node-b", 1))
    }
    try:
        args = job.run_args("--mini_batch_size", "2", "--log-level", "INFO")
        run = start_coordinator(*args, env=job.env, log=log)
        assert wait_for(lambda: total_starts(job.calls) >= 40, 60), "the job did not start"
        job_id = only_job(job.store)
        leaders = cluster.leaders(f"bf.{job_id}.")
        clock = Stopwatch()
        cluster.kill(0)
        assert run.poll() is None, "the job ended before the node was killed; make it longer"
        rc = wait_exit(run, 240, log)
        after = clock()
    finally:
        for proc in procs.values():
            stop(proc)
    assert rc == 0, log.read_text()
    assert_exactly_once(job.merged(), expected_lines(job.count))
    area = job.area(job_id)
    assert state(area)["batches_failed"] == 0
    dead = where(cluster, 0)
    for name, text in (("coordinator", log.read_text()), ("node-a", (job.logs / "node-a.log").read_text())):
        assert f"lost the connection to RabbitMQ at {dead}" in text, f"{name} was not on node 0"
        assert "reconnected to RabbitMQ at 127.0.0.1:" in text, f"{name} did not fail over"
    assert "lost the connection" not in (job.logs / "node-b.log").read_text()
    records = frames(str(area))
    twice = len(records) - len({r.batch_id for r in records})
    tries = max(int(row["tries"]) for row in report_rows(job.output, "processed_mini-batches.csv"))
    led = ", ".join(sorted(name.rsplit(".", 1)[1] for name, node in leaders.items() if node == cluster.nodes[0].node))
    print(
        f"\nnode 0 killed (it led: {led or 'no queue of the job'}); job done {after:.1f}s later; "
        f"batches committed twice: {twice}; max tries {tries}; duplicates reported {state(area)['duplicates']}"
    )
