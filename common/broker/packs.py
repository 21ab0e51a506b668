"""Several mini-batches in one broker message, each still delivered, settled and counted on its own.

Every AMQP message costs the broker, and pika on the worker, far more than a millisecond batch
does. A pack carries up to N batch bodies; a consumer hands out one `Delivery` per member and
settles the message itself once every member is settled. What a member's settle means does not
change (see `member_copy`), so no caller can tell a member from a message of its own, except:

- a lost consumer returns the whole pack, so members already acked run again (merges dedupe,
  as they do after any redelivery);
- a pack over its delivery limit is dead-lettered whole; the coordinator reads its members.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple

from common.broker.base import PRIOR_TRIES_HEADER, REASON_HEADER, TRIES_SIG_HEADER, Settle, TriesSigner
from common.errors import BrokerError

PACK = b"P"  # a pack: this tag, then member bodies joined by newlines (batch JSON holds none)


def pack_bodies(bodies: Iterable[bytes], per_message: int) -> Iterator[tuple[bytes, int]]:
    """(message body, members) for `bodies`, up to `per_message` in each. A lone body stays itself,
    unless it starts like a pack: then it travels as a pack of one, so `unpack` gives it back whole."""
    group: list[bytes] = []
    for body in bodies:
        if b"\n" in body:  # cannot be a member
            if body[:1] == PACK:
                raise ValueError("a message body that starts with 'P' cannot hold a newline")
            yield from _joined(group)
            group = []
            yield body, 1
            continue
        group.append(body)
        if len(group) >= max(per_message, 1):
            yield from _joined(group)
            group = []
    yield from _joined(group)


def _joined(group: list[bytes]) -> Iterator[tuple[bytes, int]]:
    if len(group) == 1 and group[0][:1] != PACK:
        yield group[0], 1
    elif group:
        yield PACK + b"\n".join(group), len(group)


def as_message(body: bytes) -> bytes:
    """A single body as a message of its own that `unpack` gives back whole."""
    return PACK + body if body[:1] == PACK else body


def unpack(body: bytes) -> list[bytes]:
    """The member bodies of a message: a pack's, or the body itself."""
    return body[1:].split(b"\n") if body[:1] == PACK else [body]


class MemberCopy(NamedTuple):
    """A member settled other than by ack lives on as a message of its own."""

    to: Literal["same", "dead"]
    prior_tries: int  # tries the copy has had, which the queue's own count cannot see


def member_copy(action: Settle, attempt: int) -> MemberCopy | None:
    """What settling one member leaves behind: nothing (ack), or a copy to publish first.

    A requeued try counts, as the queue counts a nack; a released one does not; a dead one
    goes to the dead queue. The pack itself is acked once every member is settled.
    """
    if action == "ack":
        return None
    if action == "requeue":
        return MemberCopy("same", attempt)
    if action == "release":
        return MemberCopy("same", attempt - 1)
    return MemberCopy("dead", attempt - 1)


def copy_headers(
    copy: MemberCopy,
    headers: dict[str, object],
    reason: str | None,
    body: bytes = b"",
    signer: TriesSigner | None = None,
) -> dict[str, object]:
    """Headers for a copy of `body`: ours from the pack, its tries so far (signed when there is a
    `signer`), a dead letter's reason."""
    out = {k: v for k, v in headers.items() if not k.startswith("x-")}
    if copy.to == "dead":
        out[REASON_HEADER] = reason or "rejected"
    elif copy.prior_tries:
        out[PRIOR_TRIES_HEADER] = copy.prior_tries
        if signer is not None:
            out[TRIES_SIG_HEADER] = signer(body, copy.prior_tries)
    return out


class PackHold:
    """The members of one delivered pack not settled yet."""

    def __init__(self, members: int) -> None:
        self.members = members
        self._settled: set[int] = set()
        self._lock = threading.Lock()

    def settle(self, slot: int) -> bool:
        """Mark one member settled; True when it was the last. Settling twice is an error."""
        with self._lock:
            if slot in self._settled:
                raise BrokerError(f"member {slot} of a packed delivery was already settled")
            self._settled.add(slot)
            return len(self._settled) == self.members

    def is_settled(self, slot: int) -> bool:
        with self._lock:
            return slot in self._settled

    @property
    def settled_all(self) -> bool:
        with self._lock:
            return len(self._settled) == self.members


class Member(NamedTuple):
    """The part of a member delivery's tag that says which pack and which member."""

    hold: PackHold
    slot: int
