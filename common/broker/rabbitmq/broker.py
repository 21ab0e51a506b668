"""RabbitMQ broker: quorum queues per job, confirmed publishing, consumers on their own I/O thread."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import pika
import pika.exceptions as pex
from pika.channel import Channel

from common.broker.base import REPLY_PREFIX, Broker, Delivery, Settle, Sink, Topic, delivery_limit, queue_names
from common.broker.packs import pack_bodies
from common.broker.rabbitmq.endpoint import channel_error, connection_targets
from common.broker.rabbitmq.io import AmqpLink, Op, delete_step, run_steps
from common.broker.rabbitmq.publish import FANOUT_EXCHANGES, WINDOW, WINDOW_BATCHES, Publisher
from common.broker.rabbitmq.session import (
    Consumer,
    Session,
    message_handler,
)
from common.broker.rabbitmq.settle import RabbitSettler
from common.broker.urls import URL_HINT, check_cluster, split_urls
from common.errors import BrokerError, UsageError

log = logging.getLogger(__name__)

QUORUM = {"x-queue-type": "quorum"}
CONSUMER_REOPEN_DELAY = 1.0
REPLY_EXPIRES_MS = 60_000  # a reply queue nobody consumes from goes after a minute


def job_queues(job_id: str, run_max_try: int) -> list[tuple[str, dict[str, Any]]]:
    """A job's queues and their arguments: quorum queues, the batches queue dead-lettering to the
    dead queue once a batch had its tries."""
    names = queue_names(job_id)
    batches = {
        **QUORUM,
        "x-delivery-limit": delivery_limit(run_max_try),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": names.dead,
    }
    return [(names.dead, QUORUM), (names.reports, QUORUM), (names.batches, batches)]


class RabbitBroker(Broker):
    """The Broker contract over RabbitMQ; semantics match MemoryBroker (see common/broker/memory.py).

    Two connections: one publishes and manages queues, one (opened on first consume) delivers. Given
    several URLs (the nodes of one cluster), each connection fails over to another node on its own.
    """

    # Each report message costs a quorum queue two log writes and their fdatasyncs (its enqueue and
    # its ack), and pika framing on both sides: gathering reports for 16 ms rather than 2 ms cut a W1
    # fleet job's RabbitMQ CPU by half (0.48 to 0.24 CPU-s). The reporter sends sooner once a
    # group is full (Reporter.flush_at), so a node with fast batches is never starved of acks.
    report_linger = 0.016

    def __init__(
        self,
        url: str | Iterable[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        heartbeat: int = 30,
        connect_timeout: float = 10,
        op_timeout: float = 120,
    ) -> None:
        urls = split_urls(url)
        if not urls:
            raise UsageError("no broker URL given", URL_HINT)
        check_cluster(urls)
        tls = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
        common = {"heartbeat": heartbeat, "connect_timeout": connect_timeout, **tls}
        self._pub_targets = connection_targets(urls, role="publisher", **common)
        self._sub_targets = connection_targets(urls, role="consumer", **common)
        self._where = self._pub_targets[0].endpoint.where + (f" (+{len(urls) - 1} nodes)" if len(urls) > 1 else "")
        self._op_timeout = op_timeout
        self._lock = threading.Lock()
        self._link_lock = threading.Lock()  # held while the consuming connection is opened (_consumer_link)
        self._jobs: dict[str, int] = {}
        self._consumers: dict[str, Consumer] = {}
        self._closed = False
        self._publisher = Publisher(lambda: self._pub, op_timeout)
        self._settler = RabbitSettler(self._publisher, lambda: self._sub, lambda: self.tries_signer)
        self._pub = AmqpLink(self._pub_targets, "pub", self._pub_up, self._publisher.on_down, op_timeout)
        self._sub: AmqpLink | None = None
        self._pub.start()

    # queues

    def declare_job(self, job_id: str, run_max_try: int) -> None:
        """The job's queues, declared at the same time (a quorum queue starts a Raft member each):
        a job's first message waits for this, so one round of declares instead of three in a row."""
        queues = job_queues(job_id, run_max_try)
        starts = [partial(self._declare, name=name, arguments=arguments) for name, arguments in queues]
        self._pub.call_all(starts, f"declaring the queues of job {job_id}")
        with self._lock:
            self._jobs[job_id] = run_max_try

    def delete_job(self, job_id: str) -> None:
        """The job's queues, deleted at the same time: with a node of the cluster lost, RabbitMQ takes
        about 5 s to delete each quorum queue that had a member there."""
        with self._lock:
            self._jobs.pop(job_id, None)

        def deleting(name: str) -> Callable[[Op], None]:
            def start(op: Op) -> None:
                def body(ch: Channel) -> None:
                    run_steps(ch, op, [delete_step(ch, name)], lambda _f: None)

                self._pub.temp_channel(op, f"deleting queue {name}", body)

            return start

        self._pub.call_all([deleting(name) for name in queue_names(job_id)], f"deleting the queues of job {job_id}")

    def depth(self, queue_name: str) -> int:
        return int(
            self._queue_op(
                queue_name,
                "reading the depth of",
                lambda ch, cb: ch.queue_declare(queue_name, passive=True, callback=cb),
            )
        )

    def purge(self, queue_name: str) -> int:
        return int(self._queue_op(queue_name, "purging", lambda ch, cb: ch.queue_purge(queue_name, callback=cb)))

    def _queue_op(self, queue_name: str, verb: str, call: Callable[[Channel, Callable[[Any], None]], None]) -> Any:
        what = f"{verb} queue {queue_name}"

        def start(op: Op) -> None:
            self._pub.temp_channel(
                op,
                what,
                lambda ch: run_steps(ch, op, [lambda cb: call(ch, cb)], lambda f: f.method.message_count),
            )

        return self._pub.call(start, what)

    def _declare(self, op: Op, name: str, arguments: dict[str, Any]) -> None:
        def body(ch: Channel) -> None:
            def declare(callback: Callable[[Any], None]) -> None:
                ch.queue_declare(name, durable=True, arguments=arguments, callback=callback)

            run_steps(ch, op, [declare], lambda _f: None)

        self._pub.temp_channel(op, f"declaring queue {name}", body)

    def _pub_up(self, conn: pika.SelectConnection) -> None:
        """After every (re)connect: publishing channel, then re-declare this process's jobs."""
        self._publisher.on_up(conn)
        with self._lock:
            jobs = dict(self._jobs)
        for job_id, tries in jobs.items():
            for name, arguments in job_queues(job_id, tries):
                self._pub.run(Op(partial(self._declare, name=name, arguments=arguments)))

    # publishing

    def publish(self, queue_name: str, bodies: Iterable[bytes], per_message: int = 1) -> int:
        self._check_open()
        members = [0]

        def messages() -> Iterator[bytes]:
            for body, count in pack_bodies(bodies, per_message):
                members[0] += count
                yield body

        # Unconfirmed messages are kept for a re-publish after a failover: at most WINDOW messages
        # holding at most WINDOW_BATCHES mini-batches. With 8,000 packs of 32 in flight a million-file
        # plan's coordinator peaked at 130 MiB; with 250 (8,000 mini-batches), at 85 MiB.
        window = max(min(WINDOW, WINDOW_BATCHES // max(per_message, 1)), 2)
        self._publisher.publish("", queue_name, messages(), window=window)
        return members[0]

    def announce(self, body: bytes, topic: Topic = "announce") -> None:
        self._check_open()
        self._publisher.publish(FANOUT_EXCHANGES[topic], "", [body], mandatory=False)

    def declare_reply_queue(self) -> str:
        name = f"{REPLY_PREFIX}{uuid.uuid4().hex}"
        # Classic (a quorum queue cannot auto-delete), not durable, gone with its consumer or after a minute.
        arguments = {"x-queue-type": "classic", "x-expires": REPLY_EXPIRES_MS}
        what = f"declaring the reply queue {name}"

        def start(op: Op) -> None:
            def body(ch: Channel) -> None:
                def declare(callback: Callable[[Any], None]) -> None:
                    ch.queue_declare(name, durable=False, auto_delete=True, arguments=arguments, callback=callback)

                run_steps(ch, op, [declare], lambda _f: None)

            self._pub.temp_channel(op, what, body)

        self._pub.call(start, what)
        return name

    # consuming

    def consume(self, queue_name: str, prefetch: int, sink: Sink) -> str:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        return self._subscribe(
            Consumer(f"bf-{uuid.uuid4().hex[:12]}", queue_name, prefetch, sink),
            f"consuming from queue {queue_name}",
        )

    def subscribe_announcements(self, sink: Sink, topic: Topic = "announce") -> str:
        spec = Consumer(f"bf-ann-{uuid.uuid4().hex[:12]}", topic, 1, sink, announce=True)
        return self._subscribe(spec, f"subscribing to {topic} messages")

    def connect_consumers(self) -> None:
        # On a thread of its own: opening waits for the handshake. consume() waits for it (the link
        # lock) if it is still connecting, and opens the link itself if this attempt failed.
        threading.Thread(target=self._try_consumer_link, name="bf-amqp-sub-open", daemon=True).start()

    def _try_consumer_link(self) -> None:
        try:
            self._consumer_link()
        except BrokerError as exc:
            log.debug("consumer connection not opened ahead: %s", exc.line())

    def _subscribe(self, spec: Consumer, what: str) -> str:
        link = self._consumer_link()
        with self._lock:
            self._consumers[spec.tag] = spec

        def start(op: Op) -> None:
            spec.waiter = op
            self._open_consumer(spec)

        try:
            link.call(start, what)
        except BrokerError:
            with self._lock:
                self._consumers.pop(spec.tag, None)
            raise
        return spec.tag

    def set_prefetch(self, consumer_tag: str, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        with self._lock:
            spec = self._consumers.get(consumer_tag)
        link = self._sub
        if spec is None or link is None or prefetch <= spec.prefetch:
            return
        spec.prefetch = prefetch  # a reconnect opens one consumer with the whole window
        link.threadsafe(lambda: self._grow(spec))

    def _grow(self, spec: Consumer) -> None:
        """A consumer's prefetch is fixed when it starts (basic.qos only applies to later consumers),
        and cancelling to start over would return what is in flight, costing tries. So the extra room
        is one more consumer on the same channel, with the difference as its prefetch."""
        session = spec.session
        if session is None or not session.alive or not session.channel.is_open or session.on_message is None:
            return
        extra = spec.prefetch - session.granted
        if extra <= 0 or spec.paused or not self._registered(spec):
            return
        session.granted = spec.prefetch
        # Numbered now, not from session.tags: a second raise may come before this one's qos-ok, and
        # pika drops the whole connection on a duplicate consumer tag.
        session.grown += 1
        tag = f"{spec.tag}.{session.grown}"
        ch, on_message = session.channel, session.on_message

        def consume(_frame: Any) -> None:
            if session.alive and ch.is_open and not spec.paused and self._registered(spec):
                session.tags.append(tag)
                ch.basic_consume(spec.queue_name, on_message, consumer_tag=tag)

        ch.basic_qos(prefetch_count=extra, callback=consume)

    def cancel(self, consumer_tag: str) -> None:
        """Closing the consumer's channel returns its unsettled deliveries, each counting as a try."""
        with self._lock:
            spec = self._consumers.pop(consumer_tag, None)
        if spec is None or self._sub is None:
            return

        def start(op: Op) -> None:
            session = spec.session
            if session is None or not session.alive or not session.channel.is_open:
                op.resolve()
                return
            session.channel.add_on_close_callback(lambda _ch, _reason: op.resolve())
            session.channel.close()

        self._sub.call(start, f"cancelling consumer on {spec.queue_name}")

    def pause(self, consumer_tag: str) -> None:
        """basic.cancel, keeping the channel open so held deliveries can still be acked or released."""
        with self._lock:
            spec = self._consumers.get(consumer_tag)
        if spec is None or self._sub is None:
            return
        spec.paused = True

        def start(op: Op) -> None:
            session = spec.session
            if session is None or not session.alive or not session.channel.is_open:
                op.resolve()
                return
            ch = session.channel
            tags = [tag for tag in session.tags if tag in ch.consumer_tags]
            waiting = set(tags)

            def cancelled(frame: Any) -> None:
                waiting.discard(frame.method.consumer_tag)
                if not waiting:
                    op.resolve()

            if not tags:
                op.resolve()
            for tag in tags:
                ch.basic_cancel(tag, callback=cancelled)

        self._sub.call(start, f"pausing consumer on {spec.queue_name}")

    def settle(self, delivery: Delivery, action: Settle, reason: str | None = None) -> None:
        self._settler.settle([(delivery, action, reason)], strict=False)

    def settle_many(self, settles: Sequence[tuple[Delivery, Settle]]) -> None:
        """Many settles in one hop to the I/O thread, contiguous acks as one multiple-ack; the copies
        some need (releases, dead letters, packed members) are published together first."""
        self._settler.settle([(delivery, action, None) for delivery, action in settles], strict=True)

    # consumer channels (I/O thread)

    def _consumer_link(self) -> AmqpLink:
        """The consuming connection, opened by the first thread that needs it while the others wait: a
        second link racing it would, on connecting, open the consumers registered meanwhile a second
        time (on the first link's connection), and a cancel closes only one of the two."""
        self._check_open()
        with self._link_lock:
            link = self._sub
            if link is None:
                link = AmqpLink(self._sub_targets, "sub", self._sub_up, lambda: None, self._op_timeout)
                link.start()
                with self._lock:
                    self._sub = link
            return link

    def _sub_up(self, _conn: pika.SelectConnection) -> None:
        with self._lock:
            specs = [spec for spec in self._consumers.values() if not spec.paused]
        for spec in specs:
            self._open_consumer(spec)

    def _open_consumer(self, spec: Consumer) -> None:
        link = self._sub
        conn = link.connection if link is not None else None
        if conn is None:
            return  # _sub_up re-opens every registered consumer after the reconnect

        def opened(ch: Channel) -> None:
            if not self._registered(spec):
                ch.close()  # cancelled while the channel was opening
                return
            session = Session(ch)
            spec.session = session
            ch.add_on_close_callback(lambda _ch, reason: self._consumer_closed(spec, session, reason))
            ch.add_on_cancel_callback(lambda _frame: self._broker_cancelled(spec, ch))
            if spec.announce:
                self._start_announcements(spec, session)
            else:
                on_message = session.on_message = message_handler(spec, session)
                session.tags.append(spec.tag)
                session.granted = spec.prefetch

                def consume(_frame: Any) -> None:
                    ch.basic_consume(spec.queue_name, on_message, consumer_tag=spec.tag, callback=ok)

                ch.basic_qos(prefetch_count=spec.prefetch, callback=consume)

        def ok(_frame: Any) -> None:
            self._consuming(spec)

        conn.channel(on_open_callback=opened)

    def _start_announcements(self, spec: Consumer, session: Session) -> None:
        ch = session.channel

        exchange = FANOUT_EXCHANGES[spec.queue_name]  # a fanout consumer's queue_name is its topic

        def on_message(_ch: Channel, _method: Any, _props: Any, body: bytes) -> None:
            spec.sink.put(Delivery(queue=spec.queue_name, body=body, attempt=1, tag=None))

        def ok(_frame: Any) -> None:
            self._consuming(spec)

        def bind(frame: Any) -> None:
            name = frame.method.queue

            def consume(_frame: Any) -> None:
                ch.basic_consume(name, on_message, auto_ack=True, consumer_tag=spec.tag, callback=ok)

            ch.queue_bind(name, exchange, callback=consume)

        def declare(_frame: Any) -> None:
            ch.queue_declare("", exclusive=True, auto_delete=True, callback=bind)

        ch.exchange_declare(exchange, "fanout", durable=True, callback=declare)

    def _consuming(self, spec: Consumer) -> None:
        if spec.waiter is not None:
            spec.waiter.resolve(spec.tag)
            spec.waiter = None

    def _consumer_closed(self, spec: Consumer, session: Session, reason: BaseException) -> None:
        with session.lock:
            session.alive = False
            session.unsettled.clear()
        if not self._registered(spec) or not isinstance(reason, pex.ChannelClosedByBroker):
            return  # cancelled by us, or the connection went: _sub_up re-opens it
        link = self._sub or self._pub
        error = channel_error(reason, f"consuming from {spec.queue_name}", link.endpoint)
        if spec.waiter is not None or reason.reply_code == 404:
            with self._lock:
                self._consumers.pop(spec.tag, None)
            if spec.waiter is not None:
                spec.waiter.fail(error)
                spec.waiter = None
            else:
                log.warning("consumer on %s stopped: %s", spec.queue_name, error.line())
            return
        # e.g. consumer_timeout: the broker requeued what we held; start over on a fresh channel
        log.warning("%s; re-opening the consumer", error.line())
        if self._sub is not None:
            self._sub.later(CONSUMER_REOPEN_DELAY, lambda: self._reopen(spec, session))

    def _reopen(self, spec: Consumer, dead: Session) -> None:
        """Re-open unless cancelled or already re-opened by a reconnect in the meantime."""
        if spec.session is dead and self._registered(spec):
            self._open_consumer(spec)

    def _registered(self, spec: Consumer) -> bool:
        with self._lock:
            return self._consumers.get(spec.tag) is spec

    def _broker_cancelled(self, spec: Consumer, ch: Channel) -> None:
        """The queue was deleted (job ended): drop the consumer."""
        log.info("consumer on %s cancelled by the broker (queue deleted)", spec.queue_name)
        with self._lock:
            if self._consumers.get(spec.tag) is spec:
                self._consumers.pop(spec.tag)
        if ch.is_open:
            ch.close()

    # lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError(f"the broker connection to {self._where} is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sub, self._sub = self._sub, None
            self._consumers.clear()
        self._publisher.abort(BrokerError(f"the broker connection to {self._where} was closed"))
        for link in (sub, self._pub):
            if link is not None:
                link.begin_close()  # each close is a round trip to the broker: both at once
        if sub is not None:
            sub.close()
        self._pub.close()
