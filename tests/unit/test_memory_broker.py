"""MemoryBroker semantics, the reference the RabbitMQ broker is held to (see tests/integration)."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from common.broker.base import REASON_HEADER, Delivery, delivery_limit, queue_names
from common.broker.memory import MemoryBroker
from common.errors import BrokerError

JOB = "job1"
NAMES = queue_names(JOB)


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    b = MemoryBroker()
    b.declare_job(JOB, run_max_try=3)
    yield b
    b.close()


def take(sink: queue.Queue[Delivery]) -> Delivery:
    return sink.get_nowait()  # the in-memory broker delivers synchronously


@pytest.mark.parametrize(("run_max_try", "limit"), [(1, 0), (2, 1), (3, 2), (10, 9)])
def test_delivery_limit_gives_run_max_try_deliveries(run_max_try: int, limit: int) -> None:
    assert delivery_limit(run_max_try) == limit
    b = MemoryBroker()
    b.declare_job(JOB, run_max_try)
    b.publish(NAMES.batches, [b"m"])
    sink: queue.Queue[Delivery] = queue.Queue()
    b.consume(NAMES.batches, 1, sink)
    attempts = []
    while not sink.empty():
        d = take(sink)
        attempts.append(d.attempt)
        b.settle(d, "requeue")
    assert attempts == list(range(1, run_max_try + 1))
    dead: queue.Queue[Delivery] = queue.Queue()
    b.consume(NAMES.dead, 1, dead)
    d = take(dead)
    assert (d.body, d.reason, d.attempt) == (b"m", "delivery_limit", 1)


@pytest.mark.parametrize(
    ("actions", "expected_attempts", "dead_reason"),
    [
        (["ack"], [1], None),
        (["requeue", "ack"], [1, 2], None),
        (["requeue", "requeue", "ack"], [1, 2, 3], None),
        (["requeue", "requeue", "requeue"], [1, 2, 3], "delivery_limit"),
        (["dead"], [1], "bad input"),
        (["requeue", "dead"], [1, 2], "bad input"),
    ],
)
def test_settle_table(
    broker: MemoryBroker, actions: list[str], expected_attempts: list[int], dead_reason: str | None
) -> None:
    broker.publish(NAMES.batches, [b"payload"])
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.batches, 1, sink)
    seen = []
    for action in actions:
        d = take(sink)
        seen.append(d.attempt)
        broker.settle(d, action, "bad input" if action == "dead" else None)  # type: ignore[arg-type]
    assert seen == expected_attempts
    assert sink.empty()
    assert broker.depth(NAMES.batches) == 0
    dead: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.dead, 1, dead)
    if dead_reason is None:
        assert dead.empty()
    else:
        d = take(dead)
        assert d.body == b"payload"
        assert d.reason == dead_reason
        assert d.headers[REASON_HEADER] == dead_reason


def test_dead_without_reason_says_rejected(broker: MemoryBroker) -> None:
    broker.publish(NAMES.batches, [b"x"])
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.batches, 1, sink)
    broker.settle(take(sink), "dead")
    dead: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.dead, 1, dead)
    assert take(dead).reason == "rejected"


def test_double_settle_is_an_error(broker: MemoryBroker) -> None:
    broker.publish(NAMES.batches, [b"x"])
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.batches, 1, sink)
    d = take(sink)
    broker.settle(d, "ack")
    with pytest.raises(BrokerError, match="already settled"):
        broker.settle(d, "ack")


def test_settle_many_settles_the_rest_then_raises_the_first_error(broker: MemoryBroker) -> None:
    broker.publish(NAMES.batches, [b"a", b"b", b"c", b"d"])
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.batches, 3, sink)
    a, b, c = take(sink), take(sink), take(sink)
    broker.settle(b, "ack")
    with pytest.raises(BrokerError, match="already settled"):
        broker.settle_many([(a, "ack"), (b, "ack"), (c, "requeue")])
    assert broker.unsettled(NAMES.batches) == 2  # d, then c again (a try counted), fill the window
    assert sorted((d.body, d.attempt) for d in (take(sink), take(sink))) == [(b"c", 2), (b"d", 1)]


def test_cancel_returns_unsettled_with_a_counted_try(broker: MemoryBroker) -> None:
    broker.publish(NAMES.batches, [b"a", b"b", b"c"])
    sink: queue.Queue[Delivery] = queue.Queue()
    tag = broker.consume(NAMES.batches, 2, sink)
    first, second = take(sink), take(sink)
    broker.cancel(tag)
    assert broker.depth(NAMES.batches) == 3
    broker.settle(first, "ack")  # stale: ignored, the message is back in the queue
    assert broker.depth(NAMES.batches) == 3
    again: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.batches, 3, again)
    got = {d.body: d.attempt for d in (take(again), take(again), take(again))}
    assert got == {first.body: 2, second.body: 2, b"c": 1}


def test_prefetch_is_respected(broker: MemoryBroker) -> None:
    broker.publish(NAMES.batches, [b"%d" % i for i in range(5)])
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.batches, 2, sink)
    assert sink.qsize() == 2
    assert broker.depth(NAMES.batches) == 3
    assert broker.unsettled(NAMES.batches) == 2
    broker.settle(take(sink), "ack")
    assert sink.qsize() == 2  # one settled, one more delivered
    assert broker.depth(NAMES.batches) == 2


def test_prefetch_only_grows(broker: MemoryBroker) -> None:
    broker.publish(NAMES.batches, [b"%d" % i for i in range(8)])
    sink: queue.Queue[Delivery] = queue.Queue()
    tag = broker.consume(NAMES.batches, 2, sink)
    broker.set_prefetch(tag, 4)
    assert broker.unsettled(NAMES.batches) == 4
    broker.set_prefetch(tag, 1)  # ignored, as on RabbitMQ
    broker.settle_many([(take(sink), "ack"), (take(sink), "requeue")])
    assert broker.unsettled(NAMES.batches) == 4
    assert broker.depth(NAMES.batches) == 3


def test_prefetch_must_be_positive(broker: MemoryBroker) -> None:
    with pytest.raises(ValueError, match="prefetch"):
        broker.consume(NAMES.batches, 0, queue.Queue())


def test_round_robin_across_consumers(broker: MemoryBroker) -> None:
    sinks: list[queue.Queue[Delivery]] = [queue.Queue(), queue.Queue()]
    for sink in sinks:
        broker.consume(NAMES.batches, 10, sink)
    broker.publish(NAMES.batches, [b"%d" % i for i in range(6)])
    assert [s.qsize() for s in sinks] == [3, 3]


def test_fifo_order(broker: MemoryBroker) -> None:
    bodies = [b"%d" % i for i in range(20)]
    broker.publish(NAMES.batches, bodies)
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.batches, 100, sink)
    assert [take(sink).body for _ in bodies] == bodies


def test_purge_and_depth(broker: MemoryBroker) -> None:
    assert broker.publish(NAMES.batches, (b"x" for _ in range(7))) == 7
    assert broker.depth(NAMES.batches) == 7
    assert broker.purge(NAMES.batches) == 7
    assert broker.depth(NAMES.batches) == 0
    assert broker.purge(NAMES.batches) == 0


def test_reports_queue_has_no_delivery_limit(broker: MemoryBroker) -> None:
    broker.publish(NAMES.reports, [b"r"])
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(NAMES.reports, 1, sink)
    for attempt in range(1, 6):
        d = take(sink)
        assert d.attempt == attempt
        broker.settle(d, "requeue")
    assert sink.qsize() == 1


def test_missing_queue_is_a_broker_error(broker: MemoryBroker) -> None:
    for call in (
        lambda: broker.publish("bf.nope.batches", [b"x"]),
        lambda: broker.depth("bf.nope.batches"),
        lambda: broker.consume("bf.nope.batches", 1, queue.Queue()),
    ):
        with pytest.raises(BrokerError, match="does not exist"):
            call()


def test_delete_job_removes_queues(broker: MemoryBroker) -> None:
    broker.publish(NAMES.batches, [b"x"])
    broker.delete_job(JOB)
    with pytest.raises(BrokerError):
        broker.depth(NAMES.batches)
    broker.delete_job(JOB)  # idempotent


def test_declare_is_idempotent_and_keeps_messages(broker: MemoryBroker) -> None:
    broker.publish(NAMES.batches, [b"x"])
    broker.declare_job(JOB, run_max_try=3)
    assert broker.depth(NAMES.batches) == 1


def test_announcements_reach_every_subscriber(broker: MemoryBroker) -> None:
    sinks: list[queue.Queue[Delivery]] = [queue.Queue(), queue.Queue()]
    tags = {broker.subscribe_announcements(s) for s in sinks}
    assert len(tags) == 2
    broker.announce(b"job1 submitted")
    for sink in sinks:
        d = take(sink)
        assert (d.body, d.attempt, d.queue) == (b"job1 submitted", 1, "announce")
