"""Consumer-side state of the RabbitMQ broker: channel sessions, consumers, and how acks go on the wire."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.channel import Channel

from common.broker.base import REASON_HEADER, Delivery, Settle, Sink, attempt_of, queue_names
from common.broker.packs import Member, PackHold, unpack

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Session:
    """One consumer channel's life; deliveries from a dead session are never settled on a new one.

    `lock` guards `unsettled` and orders the settle frames: whoever takes a tag out of `unsettled`
    queues its frame before letting go, so a multiple-ack never overtakes an earlier nack.
    """

    channel: Channel
    alive: bool = True
    unsettled: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_message: Callable[..., None] | None = None
    tags: list[str] = field(default_factory=list)  # consumers on this channel (more when the window grew)
    granted: int = 0  # their prefetch counts, summed
    grown: int = 0  # extra consumers asked for; numbers their tags before their basic.consume is sent


@dataclass(eq=False)
class Consumer:
    tag: str
    queue_name: str
    prefetch: int
    sink: Sink
    announce: bool = False
    session: Session | None = None
    waiter: Any = None  # the Op that waits for the first basic.consume-ok
    paused: bool = False


# (delivery tag, action, multiple): one basic.ack, or a basic.nack that requeues ("requeue") or drops ("dead")
Frame = tuple[int, Settle, bool]


def settle_frames(done: list[tuple[int, Settle]], still_unsettled: set[int]) -> list[Frame]:
    """Frames for settling `done` (already taken out of the session's unsettled set).

    Acks below every tag still held collapse into one multiple-ack, sent last so the single
    nacks and acks before it are already settled when the broker applies it.
    """
    floor = min(still_unsettled, default=None)
    frames: list[Frame] = []
    covered = -1
    for tag, action in sorted(done):
        if action == "ack" and (floor is None or tag < floor):
            covered = tag
        else:
            frames.append((tag, action, False))
    if covered >= 0:
        frames.append((covered, "ack", True))
    return frames


def send_frames(session: Session, frames: list[Frame]) -> None:
    """On the I/O thread: the frames, unless the channel went (the broker then took everything back)."""
    ch = session.channel
    if not session.alive or not ch.is_open:
        return
    for tag, action, multiple in frames:
        if action == "ack":
            ch.basic_ack(tag, multiple=multiple)
        else:
            ch.basic_nack(tag, requeue=action == "requeue")


def dead_queue_of(queue_name: str) -> str | None:
    """The dead queue of a job's batches queue; None for queues without one."""
    prefix, suffix = "bf.", ".batches"
    if queue_name.startswith(prefix) and queue_name.endswith(suffix):
        names = queue_names(queue_name[len(prefix) : -len(suffix)])
        if names.batches == queue_name:
            return names.dead
    return None


def delivery_headers(props: pika.BasicProperties) -> dict[str, object]:
    headers = dict(props.headers or {})
    if REASON_HEADER not in headers and "x-first-death-reason" in headers:
        headers[REASON_HEADER] = str(headers["x-first-death-reason"])  # broker dead-lettering, e.g. delivery_limit
    return headers


def message_handler(spec: Consumer, session: Session) -> Callable[..., None]:
    """pika's on_message for a consumer: note the tag as unsettled, hand the delivery to the sink."""

    def on_message(ch: Channel, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        headers = delivery_headers(props)
        with session.lock:
            session.unsettled.add(method.delivery_tag)
        attempt, members = attempt_of(headers), unpack(body)
        hold = PackHold(len(members)) if len(members) > 1 else None
        try:
            for index, member in enumerate(members):
                tag = (session, method.delivery_tag, Member(hold, index) if hold else None)
                spec.sink.put_nowait(Delivery(spec.queue_name, member, attempt, tag, headers, len(members)))
        except queue.Full:
            log.error("consumer sink for %s is full; returning delivery %s", spec.queue_name, method.delivery_tag)
            with session.lock:
                session.unsettled.discard(method.delivery_tag)
            ch.basic_nack(method.delivery_tag, requeue=True)

    return on_message
