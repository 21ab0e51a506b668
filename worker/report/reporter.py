"""Report, then settle: many reports share one publisher-confirm wait and one message.

Waiting for a confirm per report would cap a node near the one-at-a-time confirm rate;
here every report waiting when the thread wakes goes out together, bundled into as few
messages as their size allows, and each delivery is settled only after its report was
confirmed (report before ack, as before).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from common.broker.base import Broker, Delivery, Settle
from common.errors import BatchfleetError
from common.messages import bundle_reports

log = logging.getLogger(__name__)


@dataclass
class Outgoing:
    queue_name: str
    body: bytes
    delivery: Delivery | None
    action: Settle
    after: Callable[[], None] | None = None
    reason: str | None = None  # a dead letter's reason


class Reporter:
    """One thread per node; `put` never blocks on the broker."""

    def __init__(
        self,
        broker: Broker,
        seal: Callable[[str, bytes], bytes] | None = None,
        max_batch: int = 500,
        linger: float | None = None,
        flush_at: int = 64,
    ) -> None:
        self.broker = broker
        self.seal = seal  # signs each message for the job of its queue (see common/signing.seal_report)
        self.max_batch = max_batch
        # Waiting a moment after the first report gathers the next ones: fast batches then cost
        # one wake-up, publish and settle per group rather than per report (on both sides). How
        # long is the broker's to say (what a message costs it); a group of `flush_at` goes at
        # once, so the deliveries it settles come back to the node's window in time.
        self.linger = broker.report_linger if linger is None else linger
        self.flush_at = min(flush_at, max_batch)
        self._queue: queue.SimpleQueue[Outgoing | None] = queue.SimpleQueue()
        self._full = threading.Event()  # flush_at reports wait: the linger ends early
        self._pending = 0  # put and not yet sent and settled (flush waits for none)
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="bf-reporter", daemon=True)
        self._thread.start()

    def put(self, item: Outgoing) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(item)
        if self._queue.qsize() >= self.flush_at and not self._full.is_set():
            self._full.set()

    def settle_now(self, items: list[Outgoing]) -> None:
        """Settle deliveries that carry no report in the calling thread (dead letters, hand-backs)."""
        settle_all(self.broker, items, None)

    def flush(self) -> None:
        """Return once everything put so far is published and settled."""
        with self._idle:
            self._idle.wait_for(lambda: not self._pending)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if self.linger:
                self._gather()
            items = [first]
            while len(items) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # handled on the next turn, after this group
                    break
                items.append(more)
            try:
                self._send(items)
            finally:
                with self._idle:
                    self._pending -= len(items)
                    if not self._pending:
                        self._idle.notify_all()

    def _gather(self) -> None:
        """Wait out the linger, or until a group is full."""
        self._full.clear()
        if self._queue.qsize() < self.flush_at:  # checked after clearing: a put in between set it again
            self._full.wait(self.linger)

    def _send(self, items: list[Outgoing]) -> None:
        by_queue: dict[str, list[Outgoing]] = {}
        for item in items:
            by_queue.setdefault(item.queue_name, []).append(item)
        for name, group in by_queue.items():
            try:
                bodies = [item.body for item in group if item.body]  # a hand-back reports nothing
                if bodies:
                    messages = bundle_reports(bodies)
                    if self.seal is not None:
                        messages = [self.seal(name, message) for message in messages]
                    self.broker.publish(name, messages)
                settle_all(self.broker, group, None)
            except BatchfleetError as exc:
                # Not reported, so not done: give the batches back (they run again; merges dedupe).
                log.warning("could not report %d results on %s: %s", len(group), name, exc.line())
                settle_all(self.broker, group, "requeue")


def settle_all(broker: Broker, group: list[Outgoing], override: Settle | None) -> None:
    """Settle the group's deliveries, then run each item's `after`, whatever happened.

    Every delivery a node takes is settled here, and nowhere else.
    """
    try:
        # A hand-back (no report) stays one: its batch never ran, so it must not cost a try.
        settles = [
            (item.delivery, override if override and item.body else item.action)
            for item in group
            if item.delivery is not None and item.reason is None
        ]
        for item in group:
            if item.delivery is not None and item.reason is not None:
                broker.settle(item.delivery, item.action, item.reason)
        if settles:
            broker.settle_many(settles)
    except BatchfleetError as exc:
        log.warning("could not settle some of %d deliveries: %s", len(group), exc.line())
    finally:
        for item in group:
            if item.after is not None:
                item.after()
