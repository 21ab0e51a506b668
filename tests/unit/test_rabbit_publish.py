"""The confirmed publisher's reaction to refusals (nacks), with a fake connection: no server needed.

A channel opened while a quorum queue's leader is being replaced (a client failing over from a lost
node) can refuse every publish for as long as it lives on RabbitMQ 3.10; the publisher moves to a new
channel after REOPEN_AFTER refusals of one message. The real case is in
tests/chaos/test_cluster_failover.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions as pex

from common.broker.rabbitmq.endpoint import parse_endpoint
from common.broker.rabbitmq.publish import REOPEN_AFTER, Outgoing, Publisher, PublishOp


class FakeChannel:
    def __init__(self, number: int) -> None:
        self.number = number
        self.is_open = True
        self.published: list[bytes] = []
        self.on_confirm: Callable[[Any], None] | None = None
        self._on_close: list[Callable[[Any, BaseException], None]] = []

    def add_on_close_callback(self, fn: Callable[[Any, BaseException], None]) -> None:
        self._on_close.append(fn)

    def add_on_return_callback(self, _fn: Callable[..., None]) -> None:
        pass

    def confirm_delivery(self, on_confirm: Callable[[Any], None], callback: Callable[[Any], None]) -> None:
        self.on_confirm = on_confirm
        callback(None)

    def exchange_declare(self, *_args: Any, callback: Callable[[Any], None], **_kw: Any) -> None:
        callback(None)

    def basic_publish(self, _exchange: str, _key: str, body: bytes, _props: Any, mandatory: bool) -> None:
        self.published.append(body)

    def close(self) -> None:
        self.is_open = False
        for fn in self._on_close:
            fn(self, pex.ChannelClosedByClient(200, "Normal shutdown"))

    def answer(self, tag: int, ack: bool) -> None:
        method = pika.spec.Basic.Ack(tag) if ack else pika.spec.Basic.Nack(tag)
        assert self.on_confirm is not None
        self.on_confirm(type("Frame", (), {"method": method})())


class FakeConnection:
    def __init__(self) -> None:
        self.channels: list[FakeChannel] = []

    def channel(self, on_open_callback: Callable[[FakeChannel], None]) -> FakeChannel:
        ch = FakeChannel(len(self.channels) + 1)
        self.channels.append(ch)
        on_open_callback(ch)
        return ch


class FakeLink:
    """The I/O thread's side of AmqpLink: delayed calls are kept for the test to run."""

    def __init__(self, conn: FakeConnection) -> None:
        self.connection = conn
        self.endpoint = parse_endpoint("amqp://bf:pw@127.0.0.1:5672/")
        self.delayed: list[Callable[[], None]] = []
        self.lock = threading.RLock()  # held by the test while it plays the I/O thread

    def threadsafe(self, fn: Callable[[], None]) -> None:
        with self.lock:
            fn()

    def later(self, _delay: float, fn: Callable[[], None]) -> None:
        self.delayed.append(fn)

    def run_delayed(self) -> None:
        due, self.delayed = self.delayed, []
        for fn in due:
            fn()


def publisher() -> tuple[Publisher, FakeConnection, FakeLink]:
    conn = FakeConnection()
    link = FakeLink(conn)
    pub = Publisher(lambda: link, stall=5)  # type: ignore[arg-type, return-value]
    pub.on_up(conn)  # type: ignore[arg-type]
    return pub, conn, link


def send(pub: Publisher, body: bytes) -> PublishOp:
    op = PublishOp("publishing to q")
    op.sent = 1
    pub.enqueue([Outgoing(op, "", "q", body, pika.BasicProperties(), True)])
    return op


def test_a_refused_message_is_retried_on_the_same_channel_first() -> None:
    pub, conn, link = publisher()
    op = send(pub, b"a")
    conn.channels[0].answer(1, ack=False)
    link.run_delayed()
    assert [ch.published for ch in conn.channels] == [[b"a", b"a"]]
    conn.channels[0].answer(2, ack=True)
    assert op.confirmed == 1


def test_refused_again_it_goes_out_on_a_new_channel_with_the_unconfirmed_ones() -> None:
    assert REOPEN_AFTER == 2
    pub, conn, link = publisher()
    refused, waiting = send(pub, b"a"), send(pub, b"b")
    first = conn.channels[0]
    first.answer(1, ack=False)
    link.run_delayed()
    assert first.published == [b"a", b"b", b"a"]
    first.answer(3, ack=False)  # the second refusal of "a": this channel may never take it
    assert not first.is_open
    second = conn.channels[1]
    assert second.published == [b"b"]  # the unconfirmed one at once, the refused one after its backoff
    link.run_delayed()
    assert second.published == [b"b", b"a"]
    first.answer(2, ack=True)  # a late answer on the old channel confirms nothing
    assert (refused.confirmed, waiting.confirmed) == (0, 0)
    second.answer(2, ack=True)
    second.answer(1, ack=True)
    assert (refused.confirmed, waiting.confirmed) == (1, 1)


def test_the_waiting_publish_returns_once_confirmed_on_the_new_channel() -> None:
    pub, conn, link = publisher()
    results: list[int] = []
    caller = threading.Thread(target=lambda: results.append(pub.publish("", "q", [b"x"])))
    caller.start()
    deadline = time.monotonic() + 5
    while not conn.channels[0].published and time.monotonic() < deadline:
        time.sleep(0.01)
    with link.lock:
        conn.channels[0].answer(1, ack=False)
        link.run_delayed()
        conn.channels[0].answer(2, ack=False)
        link.run_delayed()
        conn.channels[1].answer(1, ack=True)
    caller.join(5)
    assert results == [1]
    assert len(conn.channels) == 2
