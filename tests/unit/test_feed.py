"""Embedded mode feeds the in-memory queue from the manifest as it drains: memory stays flat."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from common.broker.base import Delivery, queue_names
from common.broker.memory import MemoryBroker
from coordinator.plan import feed
from coordinator.plan.feed import PlanFeeder

Q = queue_names("j").batches


def broker() -> MemoryBroker:
    memory = MemoryBroker()
    memory.declare_job("j", 3)
    return memory


def drain(memory: MemoryBroker, count: int, peaks: list[int]) -> list[bytes]:
    """Consume `count` messages one at a time, noting the queue's depth as we go."""
    sink: queue.Queue[Delivery] = queue.Queue()
    tag = memory.consume(Q, 1, sink)
    got = []
    try:
        for _ in range(count):
            delivery = sink.get(timeout=10)
            peaks.append(memory.depth(Q))
            got.append(delivery.body)
            memory.settle(delivery, "ack")
    finally:
        memory.cancel(tag)
    return got


def test_lines_are_published_as_they_are_written_and_the_queue_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "READY", 5)
    monkeypatch.setattr(feed, "CHUNK", 3)
    memory, manifest = broker(), tmp_path / "plan.jsonl"
    feeder = PlanFeeder(memory, Q, manifest)
    lines = [b'{"batch_id":%d}' % i for i in range(40)]
    peaks: list[int] = []
    got: list[bytes] = []
    consumer = threading.Thread(target=lambda: got.extend(drain(memory, 40, peaks)))
    consumer.start()
    text = b"".join(line + b"\n" for line in lines)
    with open(manifest, "wb") as out:
        for cut in range(0, len(text), 97):  # pieces end mid-line, as a planner's buffer reaches the disk
            out.write(text[cut : cut + 97])
            out.flush()
            feeder([])
            time.sleep(0.005)
    feeder.planned()
    consumer.join(20)
    assert feeder.wait(10) and feeder.error is None
    feeder.close()
    assert got == lines and feeder.sent == 40
    assert max(peaks) <= 5, "never more than READY messages wait in memory"


def test_a_complete_manifest_skips_resolved_batches(tmp_path: Path) -> None:
    memory, manifest = broker(), tmp_path / "plan.jsonl"
    manifest.write_bytes(b"".join(b"line %d\n" % i for i in range(10)))
    feeder = PlanFeeder(memory, Q, manifest, skip=lambda batch: batch % 3 == 0, complete=True)
    assert feeder.wait(10)
    feeder.close()
    assert feeder.sent == 6 and memory.depth(Q) == 6


def test_close_stops_a_feeder_waiting_for_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed, "READY", 2)
    memory, manifest = broker(), tmp_path / "plan.jsonl"
    manifest.write_bytes(b"".join(b"line %d\n" % i for i in range(10)))
    feeder = PlanFeeder(memory, Q, manifest, complete=True)
    time.sleep(0.1)
    assert memory.depth(Q) == 2 and not feeder.wait(0)
    feeder.close()
    assert feeder.wait(0)


def test_lines_cut_across_small_reads_keep_their_order_and_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "BLOCK", 7)  # reads end mid-line, and hold several lines at once
    monkeypatch.setattr(feed, "CHUNK", 4)
    memory, manifest = broker(), tmp_path / "plan.jsonl"
    manifest.write_bytes(b"".join(b"line %d\n" % i for i in range(23)))
    feeder = PlanFeeder(memory, Q, manifest, skip=lambda batch: batch % 5 == 0, complete=True)
    assert feeder.wait(10) and feeder.error is None
    feeder.close()
    peaks: list[int] = []
    assert drain(memory, feeder.sent, peaks) == [b"line %d" % i for i in range(23) if i % 5]
