"""How RabbitBroker turns a group of settles into ack/nack frames (no server needed)."""

from __future__ import annotations

from common.broker.rabbitmq.session import attempt_of, settle_frames


def test_acks_below_every_held_tag_become_one_multiple_ack_sent_last() -> None:
    frames = settle_frames([(3, "ack"), (1, "ack"), (2, "requeue"), (6, "ack")], still_unsettled={4, 9})
    assert frames == [(2, "requeue", False), (6, "ack", False), (3, "ack", True)]


def test_nothing_held_lets_every_ack_collapse() -> None:
    assert settle_frames([(5, "ack"), (7, "ack"), (8, "ack")], still_unsettled=set()) == [(8, "ack", True)]


def test_acks_above_a_held_tag_go_one_by_one() -> None:
    assert settle_frames([(5, "ack"), (7, "dead")], still_unsettled={2}) == [(5, "ack", False), (7, "dead", False)]


def test_attempt_counts_the_broker_and_a_handed_back_copy() -> None:
    assert attempt_of({}) == 1
    assert attempt_of({"x-delivery-count": 2, "x-batchfleet-prior-tries": 1}) == 4
