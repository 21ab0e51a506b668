"""Packed mini-batches a node took beyond its window before it knew its batches' pace.

A pack brings more mini-batches than a node should hold while it cannot tell fast batches from
slow ones (common/policy.py, keeps_packed). Those extras wait here, held, for the first batch to
finish: fast batches run them in their turn, slow ones (or no answer within PACKED_WAIT) send them
back to the queue for other nodes. Only the dispatch thread adds and sorts; a timer, or the first
outcome, wakes it (`wake`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from common.broker.base import Delivery
from common.messages import BatchMessage
from common.policy import PACKED_WAIT, extra_fate


class PackedExtras:
    """The extras of one job on one node, oldest first."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._waiting: list[tuple[Delivery, BatchMessage, float]] = []

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def wake(self) -> None:
        """Have the dispatcher sort the extras now (the pace has news)."""
        self._wake()

    def add(self, delivery: Delivery, message: BatchMessage) -> None:
        if not self._waiting:
            self._wake_in(PACKED_WAIT)
        self._waiting.append((delivery, message, time.monotonic()))

    def sort(self, batch_seconds: float | None) -> tuple[list[tuple[Delivery, BatchMessage]], list[Delivery]]:
        """(extras to run now, extras to hand back now); the others go on waiting."""
        now = time.monotonic()
        run: list[tuple[Delivery, BatchMessage]] = []
        back: list[Delivery] = []
        waiting: list[tuple[Delivery, BatchMessage, float]] = []
        for delivery, message, since in self._waiting:
            fate = extra_fate(batch_seconds, now - since)
            if fate == "run":
                run.append((delivery, message))
            elif fate == "release":
                back.append(delivery)
            else:
                waiting.append((delivery, message, since))
        self._waiting = waiting
        if waiting:
            self._wake_in(max(PACKED_WAIT - (now - waiting[0][2]), 0.0))
        return run, back

    def _wake_in(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self._wake)
        timer.daemon = True
        timer.start()
