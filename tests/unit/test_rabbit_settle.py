"""How the RabbitMQ broker settles: copies first, then frames; a failed copy never loses a batch.

A fake channel records the frames and a fake publisher the copies, so the failure paths run
without a server (the real ones are in tests/integration/test_broker_packs.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from common.broker.base import PRIOR_TRIES_HEADER, REASON_HEADER, Delivery
from common.broker.packs import Member, PackHold
from common.broker.rabbitmq.session import Session
from common.broker.rabbitmq.settle import RabbitSettler
from common.errors import BrokerError

BATCHES, DEAD = "bf.j.batches", "bf.j.dead"


class FakeChannel:
    is_open = True

    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool]] = []

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", tag, multiple))

    def basic_nack(self, tag: int, requeue: bool = True) -> None:
        self.frames.append(("requeue" if requeue else "drop", tag, False))


class FakeLink:
    def threadsafe(self, fn: Callable[[], None]) -> None:
        fn()


class FakePublisher:
    def __init__(self, refuse: Iterable[str] = ()) -> None:
        self.refuse = set(refuse)
        self.copies: list[tuple[str, list[bytes], dict[str, Any] | None]] = []

    def publish(self, _exchange: str, key: str, bodies: Iterable[bytes], headers: dict[str, Any] | None = None) -> int:
        sent = list(bodies)
        if key in self.refuse:
            raise BrokerError(f"publishing to {key}: RabbitMQ confirmed nothing for 120s")
        self.copies.append((key, sent, headers))
        return len(sent)


def session(*tags: int) -> Session:
    s = Session(FakeChannel())  # type: ignore[arg-type]
    s.unsettled.update(tags)
    return s


def lone(s: Session, tag: int, attempt: int = 1) -> Delivery:
    return Delivery(BATCHES, b"lone%d" % tag, attempt, (s, tag, None))


def pack(s: Session, tag: int, count: int, attempt: int = 1) -> list[Delivery]:
    hold = PackHold(count)
    return [Delivery(BATCHES, b"m%d" % i, attempt, (s, tag, Member(hold, i)), members=count) for i in range(count)]


def settled(s: Session, delivered: Iterable[int]) -> dict[int, str]:
    """Each delivered tag's fate from the frames; a multiple ack covers every delivered tag up to it."""
    fate: dict[int, str] = {}
    for action, tag, multiple in s.channel.frames:  # type: ignore[attr-defined]
        fate[tag] = action
        for lower in sorted(delivered) if multiple else []:
            if lower < tag:
                fate.setdefault(lower, "ack")
    return fate


def settler(publisher: FakePublisher) -> RabbitSettler:
    return RabbitSettler(publisher, lambda: FakeLink(), lambda: None)  # type: ignore[arg-type,return-value]


def test_members_are_copied_as_they_must_and_the_pack_goes_with_the_last() -> None:
    s, publisher = session(7), FakePublisher()
    a, b, c, d = pack(s, 7, 4, attempt=2)
    settler(publisher).settle([(a, "ack", None), (b, "requeue", None)], strict=True)
    assert settled(s, [7]) == {} and s.unsettled == {7}, "the pack waits for its last member"
    settler(publisher).settle([(c, "release", None), (d, "dead", "bad input")], strict=True)
    assert settled(s, [7]) == {7: "ack"} and not s.unsettled
    assert sorted(publisher.copies, key=lambda copy: copy[0]) == [
        (BATCHES, [b"m1"], {PRIOR_TRIES_HEADER: 2}),  # requeued: the try it had counts
        (BATCHES, [b"m2"], {PRIOR_TRIES_HEADER: 1}),  # released: it does not
        (DEAD, [b"m3"], {REASON_HEADER: "bad input"}),
    ]


def test_lone_messages_need_copies_only_to_go_back_untried_or_dead() -> None:
    s, publisher = session(1, 2, 3, 4), FakePublisher()
    settler(publisher).settle(
        [(lone(s, 1), "ack", None), (lone(s, 2), "requeue", None), (lone(s, 3, 2), "release", None),
         (lone(s, 4), "dead", "forged")], strict=True,
    )  # fmt: skip
    assert settled(s, [1, 2, 3, 4]) == {1: "ack", 2: "requeue", 3: "ack", 4: "ack"}
    assert sorted(publisher.copies, key=lambda copy: copy[0]) == [
        (BATCHES, [b"lone3"], {PRIOR_TRIES_HEADER: 1}),
        (DEAD, [b"lone4"], {REASON_HEADER: "forged"}),
    ]


def test_a_copy_that_cannot_be_published_sends_its_message_back_whole() -> None:
    s, publisher = session(1, 2, 9), FakePublisher(refuse=[BATCHES])
    a, b = pack(s, 9, 2)
    with pytest.raises(BrokerError, match="confirmed nothing"):
        settler(publisher).settle([(lone(s, 1), "ack", None), (a, "ack", None), (b, "requeue", None),
                                   (lone(s, 2), "ack", None)], strict=True)  # fmt: skip
    # The acks that needed no copy still went; the pack is requeued (a try each), never acked.
    assert settled(s, [1, 2, 9]) == {1: "ack", 2: "ack", 9: "requeue"}
    assert not s.unsettled


def test_a_member_settled_twice_in_one_call_is_an_error_for_it_alone() -> None:
    s, publisher = session(3, 5), FakePublisher()
    a, b = pack(s, 5, 2)
    with pytest.raises(BrokerError, match="already settled"):
        settler(publisher).settle([(a, "release", None), (a, "release", None), (b, "ack", None),
                                   (lone(s, 3), "ack", None)], strict=True)  # fmt: skip
    assert publisher.copies == [(BATCHES, [b"m0"], None)], "one copy, not two"
    assert settled(s, [3, 5]) == {3: "ack", 5: "ack"}


def test_settles_from_a_closed_channel_are_ignored() -> None:
    s, publisher = session(4), FakePublisher()
    s.alive = False
    (a,) = pack(s, 4, 1)
    settler(publisher).settle([(a, "requeue", None), (lone(s, 4), "dead", "x")], strict=True)
    assert publisher.copies == [] and settled(s, [4]) == {}


def test_no_member_of_a_message_sent_back_whole_is_also_dead_lettered() -> None:
    s, publisher = session(9), FakePublisher(refuse=[BATCHES])
    a, b = pack(s, 9, 2)
    with pytest.raises(BrokerError, match="confirmed nothing"):
        settler(publisher).settle([(a, "requeue", None), (b, "dead", "bad input")], strict=True)
    assert publisher.copies == [], "b runs again with its pack; a dead letter too would fail it"
    assert settled(s, [9]) == {9: "requeue"}
