"""Packed messages: the wire form and what settling one member leaves behind, without a broker."""

from __future__ import annotations

import pytest

from common.broker.base import PRIOR_TRIES_HEADER, REASON_HEADER
from common.broker.packs import PACK, MemberCopy, PackHold, copy_headers, member_copy, pack_bodies, unpack
from common.errors import BrokerError


@pytest.mark.parametrize(
    ("bodies", "per_message", "expected"),
    [
        ([], 4, []),
        ([b"a"], 4, [(b"a", 1)]),
        ([b"a", b"b"], 1, [(b"a", 1), (b"b", 1)]),
        ([b"a", b"b", b"c"], 2, [(PACK + b"a\nb", 2), (b"c", 1)]),
        ([b"a", b"b", b"c", b"d"], 2, [(PACK + b"a\nb", 2), (PACK + b"c\nd", 2)]),
        # a body holding the separator travels alone
        ([b"a", b"x\ny", b"b"], 4, [(b"a", 1), (b"x\ny", 1), (b"b", 1)]),
        # one that starts like a pack is a member like any other, and alone a pack of one
        ([b"a", PACK + b"z", b"c"], 4, [(PACK + b"a\nPz\nc", 3)]),
        ([PACK + b"z"], 1, [(PACK + b"Pz", 1)]),
    ],
)
def test_pack_bodies(bodies: list[bytes], per_message: int, expected: list[tuple[bytes, int]]) -> None:
    assert list(pack_bodies(bodies, per_message)) == expected


@pytest.mark.parametrize("per_message", [1, 2, 4])
def test_unpack_is_the_inverse_of_pack(per_message: int) -> None:
    bodies = [b'{"batch_id":%d}' % i for i in range(11)] + [b"Plain", b"P", b"multi\nline"]
    messages = list(pack_bodies(bodies, per_message))
    assert sum(count for _, count in messages) == len(bodies)
    assert [member for body, _ in messages for member in unpack(body)] == bodies
    assert unpack(b'{"batch_id":1}') == [b'{"batch_id":1}']


def test_a_body_that_starts_like_a_pack_and_holds_a_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold a newline"):
        list(pack_bodies([b"P\nx"], 4))


@pytest.mark.parametrize(
    ("action", "attempt", "expected"),
    [
        ("ack", 1, None),
        ("ack", 3, None),
        ("requeue", 1, MemberCopy("same", 1)),  # the try it just had counts, as a nack's does
        ("requeue", 2, MemberCopy("same", 2)),
        ("release", 1, MemberCopy("same", 0)),  # handed back untried: no try counted
        ("release", 3, MemberCopy("same", 2)),
        ("dead", 2, MemberCopy("dead", 1)),
    ],
)
def test_member_copy(action: str, attempt: int, expected: MemberCopy | None) -> None:
    assert member_copy(action, attempt) == expected  # type: ignore[arg-type]


def test_copy_headers_keep_ours_and_drop_the_brokers() -> None:
    headers: dict[str, object] = {"x-delivery-count": 2, "x-first-death-reason": "rejected", "trace": "t1"}
    assert copy_headers(MemberCopy("same", 2), headers, None) == {"trace": "t1", PRIOR_TRIES_HEADER: 2}
    assert copy_headers(MemberCopy("same", 0), headers, None) == {"trace": "t1"}
    assert copy_headers(MemberCopy("dead", 1), headers, "unparseable") == {"trace": "t1", REASON_HEADER: "unparseable"}
    assert copy_headers(MemberCopy("dead", 0), {}, None) == {REASON_HEADER: "rejected"}


def test_pack_hold_is_settled_by_its_last_member_once() -> None:
    hold = PackHold(3)
    assert hold.settle(1) is False
    assert hold.is_settled(1) and not hold.is_settled(0)
    assert hold.settle(0) is False
    with pytest.raises(BrokerError, match="already settled"):
        hold.settle(1)
    assert not hold.settled_all
    assert hold.settle(2) is True
    assert hold.settled_all
