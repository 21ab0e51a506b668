"""In-process broker with RabbitMQ quorum-queue semantics: the embedded mode and the test harness."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.broker.base import (
    REASON_HEADER,
    REPLY_PREFIX,
    Broker,
    Delivery,
    Settle,
    Sink,
    Topic,
    attempt_of,
    delivery_limit,
    queue_names,
)
from common.broker.packs import Member, PackHold, as_message, copy_headers, member_copy, pack_bodies, unpack
from common.errors import BrokerError


@dataclass
class _Message:
    body: bytes
    headers: dict[str, object] = field(default_factory=dict)
    failed_deliveries: int = 0


@dataclass
class _Consumer:
    tag: str
    queue_name: str
    prefetch: int
    sink: Sink
    unsettled: dict[int, _Message] = field(default_factory=dict)
    paused: bool = False


@dataclass
class _Queue:
    ready: deque[_Message] = field(default_factory=deque)
    limit: int | None = None
    dead_letter_to: str | None = None
    consumers: list[str] = field(default_factory=list)
    turn: int = 0


class MemoryBroker(Broker):
    """Same contract as RabbitMQ: failed deliveries are counted, over the limit goes to the dead queue."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._queues: dict[str, _Queue] = {}
        self._consumers: dict[str, _Consumer] = {}
        self._announce_sinks: dict[str, tuple[Sink, Topic]] = {}
        self._tags = itertools.count(1)
        self._closed = False

    def declare_job(self, job_id: str, run_max_try: int) -> None:
        names = queue_names(job_id)
        with self._lock:
            self._queues.setdefault(names.dead, _Queue())
            self._queues.setdefault(names.reports, _Queue())
            batches = self._queues.setdefault(names.batches, _Queue())
            batches.limit = delivery_limit(run_max_try)
            batches.dead_letter_to = names.dead

    def delete_job(self, job_id: str) -> None:
        with self._lock:
            for name in queue_names(job_id):
                q = self._queues.pop(name, None)
                for tag in q.consumers if q else []:
                    self._consumers.pop(tag, None)

    def publish(self, queue_name: str, bodies: Iterable[bytes], per_message: int = 1) -> int:
        count = 0
        with self._lock:
            q = self._queue(queue_name)
            for body, members in pack_bodies((bytes(b) for b in bodies), per_message):
                q.ready.append(_Message(body))
                count += members
            self._dispatch(queue_name)
        return count

    def consume(self, queue_name: str, prefetch: int, sink: Sink) -> str:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        with self._lock:
            q = self._queue(queue_name)
            tag = f"mem-{next(self._tags)}"
            self._consumers[tag] = _Consumer(tag, queue_name, prefetch, sink)
            q.consumers.append(tag)
            self._dispatch(queue_name)
        return tag

    def set_prefetch(self, consumer_tag: str, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        with self._lock:
            consumer = self._consumers.get(consumer_tag)
            if consumer is not None and prefetch > consumer.prefetch:  # never shrinks, as on RabbitMQ
                consumer.prefetch = prefetch
                self._dispatch(consumer.queue_name)

    def cancel(self, consumer_tag: str) -> None:
        """Like a closed channel: unsettled deliveries return and count as failed."""
        with self._lock:
            self._announce_sinks.pop(consumer_tag, None)
            consumer = self._consumers.pop(consumer_tag, None)
            if consumer is None:
                return
            q = self._queues.get(consumer.queue_name)
            if q is None:
                return
            q.consumers.remove(consumer_tag)
            for message in reversed(list(consumer.unsettled.values())):
                self._return(q, message, front=True)
            if consumer.queue_name.startswith(REPLY_PREFIX) and not q.consumers:
                del self._queues[consumer.queue_name]  # auto-delete, as on RabbitMQ
                return
            self._dispatch(consumer.queue_name)

    def settle(self, delivery: Delivery, action: Settle, reason: str | None = None) -> None:
        with self._lock:
            queue_name = self._settle(delivery, action, reason)
            if queue_name is not None:
                self._dispatch(queue_name)

    def settle_many(self, settles: Sequence[tuple[Delivery, Settle]]) -> None:
        """One turn of the lock and one dispatch for the lot (a node settles its reports' batches so)."""
        first_error: BrokerError | None = None
        touched: set[str] = set()
        with self._lock:
            for delivery, action in settles:
                try:
                    queue_name = self._settle(delivery, action, None)
                except BrokerError as exc:
                    first_error = first_error or exc
                    continue
                if queue_name is not None:
                    touched.add(queue_name)
            for queue_name in touched:
                self._dispatch(queue_name)
        if first_error is not None:
            raise first_error

    def _settle(self, delivery: Delivery, action: Settle, reason: str | None) -> str | None:
        """Settle one delivery (lock held); the queue to dispatch from, None when its consumer is gone."""
        consumer_tag, delivery_tag, member = _tag_parts(delivery.tag)
        consumer = self._consumers.get(consumer_tag)
        if consumer is None:
            return None  # consumer gone: the message was already returned, as on RabbitMQ
        message = consumer.unsettled.get(delivery_tag)
        if message is None:
            raise BrokerError(f"delivery {delivery_tag} on {delivery.queue} was already settled")
        q = self._queues.get(consumer.queue_name)
        if member is not None:
            self._settle_member(q, delivery, member, action, reason)
            if member.hold.settled_all:
                consumer.unsettled.pop(delivery_tag)
        else:
            consumer.unsettled.pop(delivery_tag)
            if q is not None and action == "requeue":
                self._return(q, message, front=True)
            elif q is not None and action == "dead":
                self._dead_letter(q, message, reason or "rejected")
            elif q is not None and action == "release":
                q.ready.appendleft(message)  # its count unchanged
        return consumer.queue_name

    def _settle_member(self, q: _Queue | None, delivery: Delivery, member: Member, action: Settle,
                       reason: str | None) -> None:  # fmt: skip
        member.hold.settle(member.slot)
        copy = member_copy(action, delivery.attempt)
        if copy is None or q is None:
            return
        headers = copy_headers(copy, delivery.headers, reason, delivery.body, self.tries_signer)
        message = _Message(as_message(delivery.body), headers)
        if copy.to == "same":
            q.ready.appendleft(message)
        elif q.dead_letter_to in self._queues:
            self._queues[q.dead_letter_to].ready.append(message)
            self._dispatch(q.dead_letter_to)

    def pause(self, consumer_tag: str) -> None:
        with self._lock:
            consumer = self._consumers.get(consumer_tag)
            if consumer is not None:
                consumer.paused = True

    def depth(self, queue_name: str) -> int:
        with self._lock:
            return len(self._queue(queue_name).ready)

    def unsettled(self, queue_name: str) -> int:
        """Messages delivered but not settled (for tests and status)."""
        with self._lock:
            return sum(len(c.unsettled) for c in self._consumers.values() if c.queue_name == queue_name)

    def purge(self, queue_name: str) -> int:
        with self._lock:
            q = self._queue(queue_name)
            count = len(q.ready)
            q.ready.clear()
            return count

    def announce(self, body: bytes, topic: Topic = "announce") -> None:
        with self._lock:
            sinks = [sink for sink, wanted in self._announce_sinks.values() if wanted == topic]
        for sink in sinks:
            sink.put(Delivery(queue=topic, body=body, attempt=1, tag=None))

    def subscribe_announcements(self, sink: Sink, topic: Topic = "announce") -> str:
        with self._lock:
            tag = f"ann-{next(self._tags)}"
            self._announce_sinks[tag] = (sink, topic)
            return tag

    def declare_reply_queue(self) -> str:
        name = f"{REPLY_PREFIX}{uuid.uuid4().hex}"
        with self._lock:
            self._queues[name] = _Queue()
        return name

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._announce_sinks.clear()

    # internals, called with the lock held

    def _queue(self, name: str) -> _Queue:
        if name not in self._queues:
            raise BrokerError(f"queue {name} does not exist; the job may have ended or was never submitted")
        return self._queues[name]

    def _return(self, q: _Queue, message: _Message, front: bool) -> None:
        message.failed_deliveries += 1
        if q.limit is not None and message.failed_deliveries > q.limit:
            self._dead_letter(q, message, "delivery_limit")
        elif front:
            q.ready.appendleft(message)
        else:
            q.ready.append(message)

    def _dead_letter(self, q: _Queue, message: _Message, reason: str) -> None:
        if q.dead_letter_to is None or q.dead_letter_to not in self._queues:
            return
        headers = dict(message.headers)
        headers[REASON_HEADER] = reason
        headers["x-delivery-count"] = message.failed_deliveries
        dead = self._queues[q.dead_letter_to]
        dead.ready.append(_Message(message.body, headers))
        self._dispatch(q.dead_letter_to)

    def _dispatch(self, queue_name: str) -> None:
        q = self._queues.get(queue_name)
        if q is None or not q.consumers:
            return
        while q.ready:
            consumer = self._next_consumer(q)
            if consumer is None:
                return
            message = q.ready.popleft()
            delivery_tag = next(self._tags)
            consumer.unsettled[delivery_tag] = message
            attempt = attempt_of(message.headers, message.failed_deliveries)
            members = unpack(message.body)
            hold = PackHold(len(members)) if len(members) > 1 else None
            for index, body in enumerate(members):
                tag = (consumer.tag, delivery_tag, Member(hold, index) if hold else None)
                delivery = Delivery(queue_name, body, attempt, tag, dict(message.headers), len(members))
                consumer.sink.put(delivery)

    def _next_consumer(self, q: _Queue) -> _Consumer | None:
        for _ in range(len(q.consumers)):
            q.turn = (q.turn + 1) % len(q.consumers)
            consumer = self._consumers[q.consumers[q.turn]]
            if not consumer.paused and len(consumer.unsettled) < consumer.prefetch:
                return consumer
        return None


def _tag_parts(tag: Any) -> tuple[str, int, Member | None]:
    consumer_tag, delivery_tag, member = tag
    return consumer_tag, delivery_tag, member
