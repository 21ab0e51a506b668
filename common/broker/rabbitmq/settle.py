"""How the RabbitMQ broker settles deliveries: copies published first, then acks and nacks in one hop.

A quorum queue counts every return as a failed delivery, so what must go back untried (a release)
or carry a reason (a dead letter), and every packed member not simply acked, goes out as a copy
first; the original is acked only once the copies are confirmed, so a crash in between can only
duplicate a batch, never lose one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from common.broker.base import Delivery, Settle, TriesSigner
from common.broker.packs import Member, MemberCopy, as_message, copy_headers, member_copy
from common.broker.rabbitmq.io import AmqpLink
from common.broker.rabbitmq.publish import Publisher
from common.broker.rabbitmq.session import Session, dead_queue_of, send_frames, settle_frames
from common.errors import BrokerError

log = logging.getLogger(__name__)

SettleRequest = tuple[Delivery, Settle, str | None]  # a delivery, what to do, a dead letter's reason


CopyKey = tuple[str, tuple[tuple[str, object], ...]]  # where a copy goes, and its headers


@dataclass
class _Step:
    session: Session
    tag: int
    action: Settle
    member: Member | None
    queue_name: str
    copy: CopyKey | None = None


class RabbitSettler:
    """Settles deliveries of one RabbitBroker (see the module docstring)."""

    def __init__(
        self, publisher: Publisher, link: Callable[[], AmqpLink | None], signer: Callable[[], TriesSigner | None]
    ) -> None:
        self._publisher = publisher
        self._link = link
        self._signer = signer

    def settle(self, requests: Sequence[SettleRequest], strict: bool) -> None:
        """Settle every request that can be; raise the first error afterwards. With `strict`, a delivery
        settled before is an error even when it came in a batch of settles."""
        steps: list[tuple[_Step, bytes]] = []
        seen: set[tuple[int, int, int]] = set()
        first_error: BrokerError | None = None
        for delivery, action, reason in requests:
            try:
                step = self._step(delivery, action, seen)
            except BrokerError as exc:
                first_error = first_error or exc
                continue
            if step is None:
                continue  # from a closed channel: the broker already took it back
            copy = _copy_of(delivery, action, step.member is not None)
            target = None if copy is None else delivery.queue if copy.to == "same" else dead_queue_of(delivery.queue)
            if copy is not None and target is not None:
                headers = copy_headers(copy, delivery.headers, reason, delivery.body, self._signer())
                step.copy = (target, tuple(sorted(headers.items())))
                step.action = "ack"  # the copy lives on; the original just goes
            steps.append((step, delivery.body))
        given_up, copy_error = self._publish_copies(steps)
        first_error = first_error or copy_error
        try:
            self._finish([step for step, _ in steps], given_up, strict)
        except BrokerError as exc:
            first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def _publish_copies(self, steps: list[tuple[_Step, bytes]]) -> tuple[set[tuple[int, int]], BrokerError | None]:
        """Publish the copies, dead letters last: a message any of whose copies failed goes back whole,
        so none of its members may also be dead-lettered. Returns the messages given up, and why."""
        given_up: set[tuple[int, int]] = set()
        error: BrokerError | None = None
        keys = {step.copy for step, _ in steps if step.copy is not None}
        for key in sorted(keys, key=lambda k: k[0].endswith(".dead")):
            group = [(step, body) for step, body in steps if step.copy == key]
            group = [(step, body) for step, body in group if (id(step.session), step.tag) not in given_up]
            if not group:
                continue
            try:
                self._publisher.publish(
                    "", key[0], [as_message(body) for _, body in group], headers=dict(key[1]) or None
                )
            except BrokerError as exc:
                error = error or exc
                given_up.update((id(step.session), step.tag) for step, _ in group)
        return given_up, error

    def _step(self, delivery: Delivery, action: Settle, seen: set[tuple[int, int, int]]) -> _Step | None:
        session, tag, member = tag_of(delivery)
        key = (id(session), tag, member.slot if member is not None else -1)
        with session.lock:
            if not session.alive:
                log.debug("ignoring settle of delivery %s from a closed channel; the broker requeued it", tag)
                return None
            settled = member is not None and member.hold.is_settled(member.slot)
            if key in seen or tag not in session.unsettled or settled:
                raise BrokerError(f"delivery {tag} on {delivery.queue} was already settled")
        seen.add(key)
        return _Step(session, tag, action, member, delivery.queue)

    def _finish(self, steps: list[_Step], given_up: set[tuple[int, int]], strict: bool) -> None:
        """Acks and nacks for the steps. A message one of whose copies was not confirmed is never
        acked: it goes back whole (a try for each member), so nothing is lost for want of a copy."""
        first_error: BrokerError | None = None
        by_session: dict[Session, dict[int, Settle]] = {}
        queue_name = ""
        for step in steps:
            queue_name = step.queue_name
            if (id(step.session), step.tag) in given_up:
                by_session.setdefault(step.session, {})[step.tag] = "requeue"
                continue
            if step.member is not None:
                try:
                    if not step.member.hold.settle(step.member.slot):
                        continue  # the pack is acked with its last member
                except BrokerError as exc:  # settled meanwhile by another thread
                    first_error = first_error or exc
                    continue
                step.action = "ack"  # members were copied where they had to go
            by_session.setdefault(step.session, {})[step.tag] = step.action
        for session, items in by_session.items():
            try:
                self._settle_tags(session, list(items.items()), queue_name, strict)
            except BrokerError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def _settle_tags(self, session: Session, items: list[tuple[int, Settle]], queue_name: str, strict: bool) -> None:
        link = self._link()
        with session.lock:
            if not session.alive:
                log.debug("ignoring %d settles from a closed channel; the broker requeued them", len(items))
                return
            done = [(tag, action) for tag, action in items if tag in session.unsettled]
            session.unsettled.difference_update(tag for tag, _ in done)
            frames = settle_frames(done, session.unsettled)
            if link is not None and frames:
                # queued under the lock: frames reach the wire in the order tags left `unsettled`
                link.threadsafe(partial(send_frames, session, frames))
        if strict and len(done) < len(items):
            raise BrokerError(f"{len(items) - len(done)} deliveries on {queue_name} were already settled")


def _copy_of(delivery: Delivery, action: Settle, packed: bool) -> MemberCopy | None:
    """A member's copy (see packs.member_copy); a lone message needs one only to go back untried or
    to carry a reason to the dead queue: acks and requeues are plain frames."""
    if packed:
        return member_copy(action, delivery.attempt)
    if action == "release":
        return MemberCopy("same", delivery.attempt - 1)
    if action == "dead":
        return MemberCopy("dead", 0)
    return None


def tag_of(delivery: Delivery) -> tuple[Session, int, Member | None]:
    """The channel session, delivery tag and (for a packed member) which member a delivery is."""
    tag: Any = delivery.tag
    if not isinstance(tag, tuple) or len(tag) != 3 or not isinstance(tag[0], Session):
        raise BrokerError(f"delivery on {delivery.queue} did not come from this broker")
    return tag[0], tag[1], tag[2]
