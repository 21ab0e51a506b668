"""A fleet job's first "active" announcement goes out before its coordinator subscribes to workers'
hellos: workers that made ready on "preparing" start on the plan without waiting for a subscription
(on RabbitMQ, a second connection opened while planning holds the GIL)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common.broker.base import Delivery, Topic
from common.broker.memory import MemoryBroker
from common.messages import JobAnnouncement
from coordinator.runner import JobRun, RunOptions
from tests.runtime_helpers import make_job


class RecordingBroker(MemoryBroker):
    """Records announcements and subscriptions in the order they happen."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.subscribed = threading.Event()

    def announce(self, body: bytes, topic: Topic = "announce") -> None:
        if topic == "announce":
            self.calls.append(f"announce {JobAnnouncement.model_validate_json(body).state}")
        super().announce(body, topic)

    def subscribe_announcements(self, sink: queue.Queue[Delivery], topic: Topic = "announce") -> str:
        self.calls.append(f"subscribe {topic}")
        tag = super().subscribe_announcements(sink, topic)
        self.subscribed.set()
        return tag


def fleet_run(tmp: Path, broker: MemoryBroker, announce_every: float) -> JobRun:
    job = make_job(tmp, tmp / "code", tmp / "data")
    options = RunOptions(
        store_uri=str(tmp / "store"), broker=broker, embedded=False, progress=False, announce_every=announce_every
    )
    return JobRun(job, options)


def test_active_is_announced_before_the_hello_subscription(tmp_path: Path) -> None:
    broker = RecordingBroker()
    run = fleet_run(tmp_path, broker, announce_every=3600)
    run.start_workers()
    try:
        assert broker.subscribed.wait(10)
    finally:
        run._announcing.set()  # ends the announce loop
    assert broker.calls[:2] == ["announce active", "subscribe hello"]


def test_a_hello_is_still_answered_with_an_announcement(tmp_path: Path) -> None:
    # Announced every hour: a second "active" can only be the answer to the hello.
    broker = RecordingBroker()
    run = fleet_run(tmp_path, broker, announce_every=3600)
    run.start_workers()
    try:
        assert broker.subscribed.wait(10)
        broker.announce(b"{}", topic="hello")
        answered = wait_for(lambda: broker.calls.count("announce active") == 2, 10)
    finally:
        run._announcing.set()
    assert answered, broker.calls
    assert broker.calls == ["announce active", "subscribe hello", "announce active"]


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
