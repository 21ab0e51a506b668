"""Embedded mode: the in-memory queue is kept topped up from the plan on disk, never holding all of it.

The in-process broker keeps what is published in the coordinator's own memory: a million
mini-batches published at once would be a million messages (hundreds of MB). The planner writes the
plan to its local manifest as fast as it lists; a feeder thread reads the manifest behind it and
publishes while fewer than READY messages wait in the queue, so memory stays flat at any job size.
A fleet's plan goes to RabbitMQ instead, which keeps it on its own side.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from common.broker.base import Broker

log = logging.getLogger(__name__)

READY = 10_000  # messages kept waiting in the queue, at most (workers hold a few hundred)
CHUNK = 2000  # lines published per call
IDLE = 0.01  # seconds between looks at a full queue
BLOCK = 1 << 20  # bytes read from the manifest at a time


class PlanFeeder:
    """Publishes a manifest's lines (skipping the ones `skip` names) as the queue drains.

    While the plan is being written, call the feeder with each chunk handed over (it wakes up), and
    `planned()` once the manifest is complete. `close()` stops it; `wait()` returns once every line
    is published.
    """

    def __init__(
        self,
        broker: Broker,
        queue_name: str,
        manifest: Path,
        per_message: int = 1,
        skip: Callable[[int], bool] | None = None,
        complete: bool = False,
    ) -> None:
        self._broker = broker
        self._queue_name = queue_name
        self.manifest = manifest
        self._per_message = per_message
        self._skip = skip
        self._planned = complete
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._done = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None
        manifest.touch(exist_ok=True)  # the planner may not have opened it yet
        self._thread = threading.Thread(target=self._run, name="bf-feed", daemon=True)
        self._thread.start()

    def __call__(self, chunk: list[bytes]) -> None:
        """A chunk of lines reached the manifest (the lines themselves are read back from it)."""
        with self._wake:
            self._wake.notify()

    def planned(self) -> None:
        """The manifest is complete."""
        with self._wake:
            self._planned = True
            self._wake.notify()

    def _run(self) -> None:
        try:
            with open(self.manifest, "rb") as plan:
                self._feed(plan)
        except BaseException as exc:  # kept for the owner; the follower sees no progress and says so
            self.error = exc
            log.error("feeding the plan to the queue failed: %s", exc)
        finally:
            self._done.set()

    def _feed(self, source: BinaryIO) -> None:
        lines = _Lines(source)
        batch_id = 0
        while not self._stop.is_set():
            room = READY - self._broker.depth(self._queue_name)
            if room <= 0:
                self._stop.wait(IDLE)
                continue
            taken = lines.take(min(room, CHUNK))
            if taken:
                first, batch_id = batch_id, batch_id + len(taken)
                if self._skip is not None:
                    taken = [line for number, line in enumerate(taken, first) if not self._skip(number)]
                if taken:
                    self.sent += self._broker.publish(self._queue_name, taken, self._per_message)
                continue
            with self._wake:
                if self._planned and lines.at_end():
                    return
                self._wake.wait(IDLE * 10)

    def wait(self, timeout: float | None = None) -> bool:
        """True once every line is published (or feeding failed or was stopped)."""
        return self._done.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify()
        self._thread.join()


class _Lines:
    """Complete lines of a file another thread is still appending to, read a block at a time (a
    system call per line, as readline() and tell() make, costs more than the line's publishing)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._ready: list[bytes] = []  # complete lines read and not yet taken
        self._rest = b""  # a line the planner has not finished writing yet

    def take(self, most: int) -> list[bytes]:
        """Up to `most` complete lines (without their newlines); fewer at the end written so far."""
        while len(self._ready) < most:
            block = self._source.read(BLOCK)
            if not block:
                break
            text = self._rest + block
            end = text.rfind(b"\n")
            if end < 0:
                self._rest = text
                continue
            self._ready += text[:end].split(b"\n")
            self._rest = text[end + 1 :]
        taken = self._ready[:most]
        del self._ready[:most]
        return taken

    def at_end(self) -> bool:
        """Nothing left: every line taken, no half line held, no more bytes in the file."""
        if self._ready or self._rest:
            return False
        self._rest = self._source.read(1)
        return not self._rest
