"""Confirmed publishing over one channel: a window of messages in flight, never one wait per message."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from functools import partial
from itertools import islice
from typing import Any, NamedTuple

import pika
import pika.exceptions as pex
from pika.channel import Channel

from common.broker.rabbitmq.endpoint import Endpoint, channel_error
from common.broker.rabbitmq.io import AmqpLink
from common.errors import BrokerError

log = logging.getLogger(__name__)

ANNOUNCE_EXCHANGE = "batchfleet.jobs"
# A fanout exchange per topic (common/broker/base.py Topic): jobs to workers, workers' hellos to coordinators.
FANOUT_EXCHANGES = {"announce": ANNOUNCE_EXCHANGE, "hello": "batchfleet.hello"}
CHUNK = 500  # messages handed to the I/O thread per wake-up
WINDOW = 8000  # unconfirmed messages per publish() call
WINDOW_BATCHES = 8000  # and mini-batches in them, for packs (see RabbitBroker.publish)
NACK_RETRIES = 12  # about 15 s of backoff before a refused message fails its publish()
NACK_BACKOFF_CAP = 2.0
REOPEN_AFTER = 2  # a message refused this many times in a row: publish on a new channel (see _reopen)


class PublishOp:
    """One publish() call: how many were sent, how many confirmed, the first failure."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.cond = threading.Condition()
        self.sent = 0
        self.confirmed = 0
        self.error: BrokerError | None = None
        self.abandoned = False

    def add_confirmed(self, count: int) -> None:
        with self.cond:
            self.confirmed += count
            self.cond.notify_all()

    def set_error(self, error: BrokerError) -> None:
        with self.cond:
            if self.error is None:
                self.error = error
            self.cond.notify_all()

    def wait_in_flight(self, limit: int, stall: float, endpoint: Endpoint) -> None:
        """Wait until at most `limit` are unconfirmed; give up after `stall` seconds without a confirm."""
        with self.cond:
            last, deadline = self.confirmed, time.monotonic() + stall
            while self.error is None and self.sent - self.confirmed > limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.abandoned = True
                    raise BrokerError(
                        f"{self.what}: RabbitMQ at {endpoint.where} confirmed nothing for {stall:.0f}s",
                        "check that the broker is up and not blocked by a disk or memory alarm",
                    )
                self.cond.wait(remaining)
                if self.confirmed != last:
                    last, deadline = self.confirmed, time.monotonic() + stall
            if self.error is not None:
                self.abandoned = True
                raise self.error


class Outgoing(NamedTuple):
    op: PublishOp
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool
    refusals: int = 0


class Publisher:
    """Owns the confirm-mode channel; the I/O-thread methods are marked as such."""

    def __init__(self, link_ref: Callable[[], AmqpLink], stall: float) -> None:
        self._link = link_ref
        self._stall = stall
        self._channel: Channel | None = None
        self._next_tag = 1
        self._unsent: deque[Outgoing] = deque()
        self._pending: OrderedDict[int, Outgoing] = OrderedDict()
        self._persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        self._live: set[PublishOp] = set()
        self._live_lock = threading.Lock()

    def _endpoint(self) -> Endpoint:
        return self._link().endpoint

    # caller side

    def abort(self, error: BrokerError) -> None:
        """Fail every publish() still waiting (the broker is being closed)."""
        with self._live_lock:
            live = list(self._live)
        for op in live:
            op.set_error(error)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        bodies: Iterable[bytes],
        *,
        headers: dict[str, Any] | None = None,
        mandatory: bool = True,
        window: int = WINDOW,
    ) -> int:
        """Stream bodies in chunks, keep at most `window` unconfirmed, return when all are confirmed."""
        target = routing_key if not exchange else f"exchange {exchange}"
        op = PublishOp(f"publishing to {target}")
        props = self._persistent
        if headers:
            props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, headers=headers)
        link = self._link()
        items = iter(bodies)
        with self._live_lock:
            self._live.add(op)
        try:
            size = max(1, min(CHUNK, window // 2))  # so a chunk can go while the one before is confirmed
            while chunk := list(islice(items, size)):
                op.wait_in_flight(window - len(chunk), self._stall, link.endpoint)
                batch = [Outgoing(op, exchange, routing_key, bytes(b), props, mandatory) for b in chunk]
                op.sent += len(batch)
                link.threadsafe(partial(self.enqueue, batch))
            op.wait_in_flight(0, self._stall, link.endpoint)
        finally:
            op.abandoned = op.abandoned or op.confirmed < op.sent
            with self._live_lock:
                self._live.discard(op)
        return op.sent

    # I/O thread

    def on_up(self, conn: pika.SelectConnection) -> None:
        def opened(channel: Channel) -> None:
            def declared(_frame: Any) -> None:
                self._channel = channel
                self._next_tag = 1
                self._pump()

            def confirming(_frame: Any) -> None:
                # Publishing to an exchange that does not exist closes the channel: declare every topic's first.
                channel.exchange_declare(ANNOUNCE_EXCHANGE, "fanout", durable=True, callback=hello)

            def hello(_frame: Any) -> None:
                channel.exchange_declare(FANOUT_EXCHANGES["hello"], "fanout", durable=True, callback=declared)

            channel.add_on_close_callback(self._closed)
            channel.add_on_return_callback(self._returned)
            channel.confirm_delivery(partial(self._confirmed, channel), callback=confirming)

        conn.channel(on_open_callback=opened)

    def on_down(self) -> None:
        self._channel = None
        self._resend_pending()

    def enqueue(self, batch: list[Outgoing]) -> None:
        self._unsent.extend(batch)
        self._pump()

    def _pump(self) -> None:
        ch = self._channel
        while ch is not None and ch.is_open and self._unsent:
            msg = self._unsent.popleft()
            if msg.op.abandoned or msg.op.error is not None:
                continue
            ch.basic_publish(msg.exchange, msg.routing_key, msg.body, msg.properties, mandatory=msg.mandatory)
            self._pending[self._next_tag] = msg
            self._next_tag += 1

    def _resend_pending(self) -> None:
        """Unconfirmed messages go out again on the next channel: at least once, never lost."""
        if self._pending:
            log.info("re-sending %d unconfirmed messages after a broker disconnect", len(self._pending))
            self._unsent.extendleft(reversed(list(self._pending.values())))
            self._pending.clear()

    def _confirmed(self, channel: Channel, frame: Any) -> None:
        if channel is not self._channel:
            return  # a channel given up by _reopen: its messages were sent again on the new one
        method = frame.method
        tag, multiple = method.delivery_tag, method.multiple
        settled: list[Outgoing] = []
        if multiple:
            while self._pending and next(iter(self._pending)) <= tag:
                settled.append(self._pending.popitem(last=False)[1])
        elif tag in self._pending:
            settled.append(self._pending.pop(tag))
        if isinstance(method, pika.spec.Basic.Nack):
            self._refused(settled)
            return
        counts: dict[PublishOp, int] = {}
        for msg in settled:
            counts[msg.op] = counts.get(msg.op, 0) + 1
        for op, count in counts.items():
            op.add_confirmed(count)

    def _refused(self, refused: list[Outgoing]) -> None:
        """A nack means 'not stored, try again' (a quorum queue still electing its leader after a
        restart nacks); publish again with backoff, and give up only after NACK_RETRIES."""
        retry = [m._replace(refusals=m.refusals + 1) for m in refused if m.refusals < NACK_RETRIES]
        for msg in refused:
            if msg.refusals >= NACK_RETRIES:
                msg.op.set_error(
                    BrokerError(
                        f"{msg.op.what}: RabbitMQ at {self._endpoint().where} refused a message {NACK_RETRIES} times",
                        "check the queue's length limit and the broker log",
                    )
                )
        if retry:
            if max(m.refusals for m in retry) >= REOPEN_AFTER:
                self._reopen()
            delay = min(NACK_BACKOFF_CAP, 0.25 * 2 ** (retry[0].refusals - 1))
            log.warning(
                "RabbitMQ at %s refused %d message(s); publishing them again in %.2fs",
                self._endpoint().where,
                len(retry),
                delay,
            )
            self._link().later(delay, partial(self._requeue_front, retry))

    def _reopen(self) -> None:
        """Publish on a new channel. On RabbitMQ 3.10 a channel opened while a quorum queue's leader is
        being replaced (a client failing over from a lost node does just that) can keep the lost
        leader and have every publish to that queue refused for as long as it lives, while a new
        channel finds the new leader. Unconfirmed messages go out again on the new channel."""
        ch, link = self._channel, self._link()
        conn = link.connection
        if ch is None or conn is None or not ch.is_open:
            return
        log.info("RabbitMQ at %s keeps refusing messages; publishing on a new channel", link.endpoint.where)
        self._channel = None
        self._resend_pending()
        ch.close()
        self.on_up(conn)

    def _requeue_front(self, batch: list[Outgoing]) -> None:
        self._unsent.extendleft(reversed(batch))
        self._pump()

    def _returned(self, _ch: Channel, method: Any, _props: Any, _body: bytes) -> None:
        error = BrokerError(
            f"queue {method.routing_key} does not exist on {self._endpoint().where}",
            "the job may have ended or was never submitted",
        )
        for msg in list(self._pending.values()) + list(self._unsent):
            if msg.routing_key == method.routing_key and msg.exchange == method.exchange:
                msg.op.set_error(error)

    def _closed(self, ch: Channel, reason: BaseException) -> None:
        if ch is not self._channel and self._channel is not None:
            return
        self._channel = None
        if isinstance(reason, pex.ChannelClosedByBroker):
            error = channel_error(reason, "publishing", self._endpoint())
            for msg in self._pending.values():
                msg.op.set_error(error)
            self._pending.clear()
            link = self._link()
            conn = link.connection
            if conn is not None:
                link.later(1.0, lambda: self.on_up(conn) if link.connection is conn else None)
        else:
            self._resend_pending()
