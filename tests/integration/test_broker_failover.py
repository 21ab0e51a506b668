"""Several broker URLs on one node, each reached through its own proxy: the client connects to the first
live one and, when its way in is cut, moves to the next at once, losing and duplicating nothing.

A real cluster losing a node is the chaos tier's (tests/chaos/test_cluster_failover.py); this is the
client's part of it, with nothing but the session's single node.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pika.adapters.utils import io_services_utils

from common.broker.base import Delivery, queue_names
from common.broker.rabbitmq.broker import RabbitBroker
from tests.integration.test_broker_contract import consume, eventually, quiet, take
from tests.servers import TcpProxy, free_port, unavailable

pytestmark = pytest.mark.integration


def _via(url: str, proxy: TcpProxy) -> str:
    """The same URL with its port replaced by the proxy's."""
    head, tail = url.rsplit("@", 1)
    host_port, _, path = tail.partition("/")
    return f"{head}@{host_port.rsplit(':', 1)[0]}:{proxy.port}/{path}"


def _node_port(url: str) -> int:
    return int(url.rsplit("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


@pytest.fixture
def ways_in(rabbitmq: Any) -> Iterator[list[TcpProxy]]:
    """Two proxies to the session's node: two 'nodes' as far as the client can tell."""
    if not rabbitmq.url.startswith("amqp://"):
        unavailable("the failover tests need a plain amqp:// node to proxy")
    proxies = [TcpProxy(_node_port(rabbitmq.url)) for _ in range(2)]
    for proxy in proxies:
        proxy.start()
    try:
        yield proxies
    finally:
        for proxy in proxies:
            proxy.stop()


def test_connects_to_the_first_node_that_answers(rabbitmq: Any) -> None:
    dead = f"amqp://bf:not-used@127.0.0.1:{free_port()}/"
    broker = RabbitBroker([dead, rabbitmq.url], connect_timeout=5)
    job_id = f"t{uuid.uuid4().hex[:10]}"
    names = queue_names(job_id)
    try:
        broker.declare_job(job_id, run_max_try=2)
        broker.publish(names.batches, [b"hello"])
        _, sink = consume(broker, names.batches)
        delivery = take(sink)
        assert delivery.body == b"hello"
        broker.settle(delivery, "ack")
    finally:
        broker.delete_job(job_id)
        broker.close()


def test_cut_node_fails_over_mid_consume_and_mid_publish(
    rabbitmq: Any, ways_in: list[TcpProxy], caplog: pytest.LogCaptureFixture
) -> None:
    """Cut the way in that both connections use while a consumer holds deliveries and a publisher
    waits for confirms: both move to the other URL at once (the cut one refuses for the rest of the
    test, so waiting for it would never end), and every message is acked, none lost."""
    first, second = (_via(rabbitmq.url, p) for p in ways_in)
    broker = RabbitBroker([first, second], heartbeat=5)
    job_id = f"t{uuid.uuid4().hex[:10]}"
    names = queue_names(job_id)
    expected = {b"m%03d" % i for i in range(300)}
    broker.declare_job(job_id, run_max_try=10)
    broker.publish(names.batches, sorted(expected)[:150])
    acked: list[bytes] = []
    stop = threading.Event()
    _, sink = consume(broker, names.batches, prefetch=10)

    def work() -> None:
        while not stop.is_set():
            try:
                d = sink.get(timeout=0.2)
            except queue.Empty:
                continue
            time.sleep(0.01)
            broker.settle(d, "ack")  # settles from the cut connection are ignored, not raised
            acked.append(d.body)

    worker = threading.Thread(target=work)
    worker.start()
    caplog.set_level(logging.INFO, logger="common.broker.rabbitmq.io")
    try:
        eventually(lambda: len(acked) >= 30, True)
        late = threading.Thread(target=broker.publish, args=(names.batches, sorted(expected)[150:]))
        late.start()
        ways_in[0].stop()
        cut = time.monotonic()
        late.join(60)
        assert not late.is_alive(), "the publish never completed on the second URL"
        eventually(lambda: set(acked) == expected, True, timeout=60)
        took = time.monotonic() - cut
        eventually(lambda: broker.depth(names.batches), 0)
        time.sleep(1)
        assert quiet(sink)
        moved = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconnected to RabbitMQ")]
        assert len(moved) == 2, moved  # the publishing and the consuming connection
        assert all(f":{ways_in[1].port}" in line for line in moved), moved
        print(f"\nfailover: all {len(expected)} acked {took:.1f}s after the cut, {len(acked) - len(expected)} twice")
    finally:
        stop.set()
        worker.join()
        broker.delete_job(job_id)
        broker.close()


def test_every_node_lost_backs_off_until_any_returns(rabbitmq: Any, ways_in: list[TcpProxy]) -> None:
    """Both ways in cut: the client keeps trying both with backoff; the first one back serves it."""
    first, second = (_via(rabbitmq.url, p) for p in ways_in)
    broker = RabbitBroker([first, second], heartbeat=5)
    job_id = f"t{uuid.uuid4().hex[:10]}"
    names = queue_names(job_id)
    try:
        broker.declare_job(job_id, run_max_try=3)
        sink: queue.Queue[Delivery] = queue.Queue()
        broker.consume(names.batches, 2, sink)
        for proxy in ways_in:
            proxy.stop()
        time.sleep(3)  # a few rounds over both nodes, backing off
        ways_in[1].start()
        broker.publish(names.batches, [b"after"])
        delivery = take(sink, timeout=30)
        assert delivery.body == b"after"
        broker.settle(delivery, "ack")
        eventually(lambda: broker.depth(names.batches), 0)
    finally:
        broker.delete_job(job_id)
        broker.close()


def test_an_error_pika_lets_out_of_its_loop_costs_one_attempt(
    rabbitmq: Any, ways_in: list[TcpProxy], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket reset between pika's connect and its getpeername() raises ValueError out of pika's I/O
    loop (seen when a way in was cut as the client reconnected): the link drops that attempt and makes
    the next, where its I/O thread used to die and every later publish waited out its 120 s stall."""
    broker = RabbitBroker([_via(rabbitmq.url, ways_in[0])], heartbeat=5)
    job_id = f"t{uuid.uuid4().hex[:10]}"
    names = queue_names(job_id)
    made = []
    real = io_services_utils._AsyncStreamConnector.__init__

    def choke_once(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(1)
        if len(made) <= 2:  # both connections' first reconnect (the publisher's and the consumer's)
            raise ValueError("Expected connected socket, but getpeername() failed: error=OSError(107)")
        real(self, *args, **kwargs)

    try:
        broker.declare_job(job_id, run_max_try=3)
        _, sink = consume(broker, names.batches)
        monkeypatch.setattr(io_services_utils._AsyncStreamConnector, "__init__", choke_once)
        caplog.set_level(logging.INFO, logger="common.broker.rabbitmq.io")
        ways_in[0].stop()
        ways_in[0].start()
        broker.publish(names.batches, [b"after"])
        delivery = take(sink, timeout=30)
        assert delivery.body == b"after"
        broker.settle(delivery, "ack")
        eventually(lambda: broker.depth(names.batches), 0)
        lines = [r.getMessage() for r in caplog.records]
        assert sum("broke inside pika (ValueError" in line for line in lines) == 2, lines
        assert sum(line.startswith("reconnected to RabbitMQ") for line in lines) == 2, lines
        assert len(made) >= 4
    finally:
        monkeypatch.undo()
        broker.delete_job(job_id)
        broker.close()
