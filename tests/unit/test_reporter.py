"""The node's reporter: how long it gathers reports, and that a full group does not wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from common.broker.base import Broker
from common.broker.memory import MemoryBroker
from common.broker.rabbitmq.broker import RabbitBroker
from worker.report.reporter import Outgoing, Reporter


class Recorder:
    """The broker calls a reporter makes, with when each publish happened."""

    report_linger = 0.05

    def __init__(self) -> None:
        self.published: list[tuple[float, list[bytes]]] = []
        self.first = threading.Event()

    def publish(self, queue_name: str, bodies: Iterable[bytes], per_message: int = 1) -> int:
        sent = list(bodies)
        self.published.append((time.monotonic(), sent))
        self.first.set()
        return len(sent)

    def settle_many(self, settles: object) -> None:
        pass

    def settle(self, delivery: object, action: object, reason: object = None) -> None:
        pass


def report(n: int) -> Outgoing:
    return Outgoing("bf.j.reports", b'R{"batch_id":%d}' % n, None, "ack")


def reporter(broker: Recorder, **kwargs: float) -> Reporter:
    return Reporter(broker, **kwargs)  # type: ignore[arg-type]


def test_linger_is_the_brokers_unless_given() -> None:
    broker = Recorder()
    assert reporter(broker).linger == 0.05
    assert reporter(broker, linger=0.5).linger == 0.5
    # RabbitMQ pays per message (a quorum queue's log writes and fsyncs), the in-memory queue hardly.
    assert RabbitBroker.report_linger > MemoryBroker.report_linger == Broker.report_linger


def test_a_lone_report_waits_the_linger_then_goes() -> None:
    broker = Recorder()
    sender = reporter(broker, linger=0.3, flush_at=64)
    put_at = time.monotonic()
    sender.put(report(1))
    assert broker.first.wait(10)
    assert broker.published[0][0] - put_at >= 0.25
    sender.close()


def test_a_full_group_goes_without_waiting_out_the_linger() -> None:
    broker = Recorder()
    sender = reporter(broker, linger=60.0, flush_at=4)
    started = time.monotonic()
    for n in range(5):
        sender.put(report(n))
    sender.flush()  # returns once all five are published and settled
    assert time.monotonic() - started < 30
    assert sum(len(bodies) for _, bodies in broker.published) == 1  # one bundle of five
    sender.close()


def test_reports_put_while_it_lingers_travel_together() -> None:
    broker = Recorder()
    sender = reporter(broker, linger=0.2, flush_at=500)
    for n in range(20):
        sender.put(report(n))
    sender.flush()
    assert len(broker.published) == 1
    body = broker.published[0][1][0]
    assert body.startswith(b"B") and body.count(b"\n") == 19
    sender.close()
