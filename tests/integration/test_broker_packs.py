"""Packed messages under one contract, on MemoryBroker and on a real RabbitMQ node.

Each member of a pack is delivered, settled and counted as if it had come alone; the pack
itself is settled by its last member, and returns whole when its consumer goes.
"""

from __future__ import annotations

import queue

import pytest

from common.broker.base import REASON_HEADER, Broker, Delivery, queue_names
from common.errors import BrokerError
from tests.integration.test_broker_contract import broker, consume, eventually, job, quiet, take

__all__ = ["broker", "job"]  # the contract's fixtures: both brokers, a fresh job per test

pytestmark = pytest.mark.integration


def take_all(sink: queue.Queue[Delivery], count: int) -> list[Delivery]:
    return [take(sink) for _ in range(count)]


def test_members_arrive_in_order_as_deliveries_of_their_own(broker: Broker, job: str) -> None:
    names = queue_names(job)
    bodies = [b"m%02d" % i for i in range(10)]
    assert broker.publish(names.batches, bodies, per_message=4) == 10
    eventually(lambda: broker.depth(names.batches), 3)  # 4 + 4 + 2 members
    _, sink = consume(broker, names.batches, prefetch=3)
    got = take_all(sink, 10)
    assert [d.body for d in got] == bodies
    assert {d.attempt for d in got} == {1} and all(d.packed for d in got)
    broker.settle_many([(d, "ack") for d in got])
    eventually(lambda: broker.depth(names.batches), 0)
    assert quiet(sink)


def test_a_lone_body_is_not_packed(broker: Broker, job: str) -> None:
    names = queue_names(job)
    assert broker.publish(names.batches, [b"a", b"b", b"c"], per_message=2) == 3
    _, sink = consume(broker, names.batches, prefetch=5)
    got = take_all(sink, 3)
    assert [(d.body, d.packed) for d in got] == [(b"a", True), (b"b", True), (b"c", False)]
    broker.settle_many([(d, "ack") for d in got])


def test_the_pack_is_settled_by_its_last_member(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"a", b"b", b"c", b"d"], per_message=2)
    _, sink = consume(broker, names.batches, prefetch=1)
    first = take_all(sink, 2)
    broker.settle(first[0], "ack")
    assert quiet(sink), "the next pack waits while a member of this one is unsettled"
    broker.settle(first[1], "ack")
    second = take_all(sink, 2)
    assert [d.body for d in second] == [b"c", b"d"]
    broker.settle_many([(d, "ack") for d in second])


@pytest.mark.parametrize(
    ("action", "again"),
    [("requeue", 2), ("release", 1)],  # a requeued try counts; a hand-back does not
)
def test_a_member_goes_back_alone(broker: Broker, job: str, action: str, again: int) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"a", b"b", b"c"], per_message=3)
    _, sink = consume(broker, names.batches, prefetch=2)
    a, b, c = take_all(sink, 3)
    broker.settle_many([(a, "ack"), (b, action), (c, "ack")])  # type: ignore[list-item]
    back = take(sink)
    assert (back.body, back.attempt, back.packed) == (b"b", again, False)
    broker.settle(back, "ack")
    assert quiet(sink)
    eventually(lambda: broker.depth(names.batches), 0)


def test_requeued_members_count_their_tries(broker: Broker, job: str) -> None:
    """A requeued member's copy carries its tries; past run_max_try the worker dead-letters it itself
    (`WorkerNode._on_delivery`), as the queue's own count starts again with each copy."""
    names = queue_names(job)
    broker.publish(names.batches, [b"a", b"b"], per_message=2)
    _, sink = consume(broker, names.batches, prefetch=2)
    a, b = take_all(sink, 2)
    broker.settle(a, "ack")
    broker.settle(b, "requeue")
    again = take(sink)
    assert again.attempt == 2
    broker.settle(again, "requeue")
    last = take(sink)
    assert (last.body, last.attempt) == (b"b", 3)
    broker.settle(last, "ack")


def test_a_dead_member_reaches_the_dead_queue_with_its_reason(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"a", b"bad", b"c"], per_message=3)
    _, sink = consume(broker, names.batches, prefetch=1)
    a, bad, c = take_all(sink, 3)
    broker.settle(bad, "dead", "unparseable batch message")
    broker.settle_many([(a, "ack"), (c, "ack")])
    _, dead = consume(broker, names.dead)
    letter = take(dead)
    assert (letter.body, letter.reason) == (b"bad", "unparseable batch message")
    broker.settle(letter, "ack")
    assert quiet(sink)


def test_settling_a_member_twice_is_an_error(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"a", b"b"], per_message=2)
    _, sink = consume(broker, names.batches)
    a, b = take_all(sink, 2)
    broker.settle(a, "ack")
    with pytest.raises(BrokerError, match="already settled"):
        broker.settle(a, "ack")
    broker.settle(b, "ack")


def test_a_lost_consumer_returns_the_whole_pack_with_a_counted_try(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"a", b"b", b"c"], per_message=3)
    tag, sink = consume(broker, names.batches, prefetch=1)
    a, _b, _c = take_all(sink, 3)
    broker.settle(a, "ack")  # done, but its pack is not: it runs again (merges dedupe)
    broker.cancel(tag)
    _, sink2 = consume(broker, names.batches, prefetch=1)
    again = take_all(sink2, 3)
    assert [(d.body, d.attempt) for d in again] == [(b"a", 2), (b"b", 2), (b"c", 2)]
    broker.settle_many([(d, "ack") for d in again])


def test_a_pack_over_its_delivery_limit_is_dead_lettered_whole(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"a", b"b"], per_message=2)
    for _ in range(3):  # run_max_try=3: three deliveries, each lost with its consumer
        tag, sink = consume(broker, names.batches, prefetch=1)
        take_all(sink, 2)
        broker.cancel(tag)
    _, dead = consume(broker, names.dead, prefetch=5)
    letters = take_all(dead, 2)  # a consumer of the dead queue gets the members, as anyone does
    assert [(d.body, d.reason) for d in letters] == [(b"a", "delivery_limit"), (b"b", "delivery_limit")]
    assert all(d.headers[REASON_HEADER] == "delivery_limit" for d in letters)
    broker.settle_many([(d, "ack") for d in letters])
    assert quiet(dead)
    eventually(lambda: broker.depth(names.batches), 0)


def test_a_body_that_starts_like_a_pack_survives_packing_and_copies(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"Pz", b"a"], per_message=2)
    broker.publish(names.batches, [b"Plone"])
    _, sink = consume(broker, names.batches, prefetch=3)
    pz, a, lone = take_all(sink, 3)
    assert (pz.body, a.body, lone.body) == (b"Pz", b"a", b"Plone")
    broker.settle_many([(pz, "release"), (a, "ack"), (lone, "ack")])
    rest = take_all(sink, 1)
    assert [d.body for d in rest] == [b"Pz"]
    broker.settle_many([(d, "ack") for d in rest])


def test_packs_stream_through_a_window_of_mini_batches(
    broker: Broker, job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More packs than the unconfirmed window holds all arrive; on RabbitMQ the window counts members."""
    from common.broker.rabbitmq.broker import RabbitBroker

    names = queue_names(job)
    if isinstance(broker, RabbitBroker):
        monkeypatch.setattr("common.broker.rabbitmq.broker.WINDOW_BATCHES", 64)  # 2 packs of 32 in flight
    bodies = [b"m%04d" % i for i in range(32 * 20 + 5)]
    assert broker.publish(names.batches, bodies, per_message=32) == len(bodies)
    eventually(lambda: broker.depth(names.batches), 21)
    _, sink = consume(broker, names.batches, prefetch=25)
    got = take_all(sink, len(bodies))
    assert [d.body for d in got] == bodies
    broker.settle_many([(d, "ack") for d in got])
    eventually(lambda: broker.depth(names.batches), 0)
