"""Interpreters started ahead of a job's children, so user code loads without waiting for Python.

A spawned interpreter takes a tenth of a second or more to start and import what a child needs;
an embedded run spends about as long importing and resolving the spec before its node starts
children. A standby is spawned first, imports worker.run.child, and waits for a child's spec;
the pool takes one in place of spawning when the job runs in this same interpreter.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from worker.run.childenv import secrets_withheld

Started = tuple[BaseProcess, Connection, Any]  # the process, its pipe, its shared progress counter


def standby_main(conn: Connection, progress: Any) -> None:
    """Spawn target: import what a child needs, wait for ("spec", process name, spec), become that child."""
    for name in ("SIGINT", "SIGBREAK"):  # as child_main: the supervisor decides when children stop
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    # Here, not at the top: a run starts its standbys before it loads its own modules (batchfleet/headstart.py).
    from worker.run.child import child_main

    try:
        message = conn.recv()
    except (EOFError, OSError):
        return  # not needed (or the parent is gone)
    if message[0] != "spec":
        return
    multiprocessing.current_process().name = f"batchfleet-{message[1]}"
    child_main(conn, message[2], progress)


class Standby:
    """Spawned interpreters waiting to become a pool's children; close() stops those not taken."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._waiting: list[Started] = []
        self._starting = 0  # being started by top_up (outside the lock: a start takes milliseconds)
        self._closed = False
        # Runs before multiprocessing's own exit hook, which would wait for a standby forever.
        atexit.register(self.close)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def trim(self, count: int) -> Standby:
        """Stop the waiting ones beyond `count` (the job wants fewer children than were guessed)."""
        with self._lock:
            extra, self._waiting = self._waiting[count:], self._waiting[:count]
        for process, conn, _ in extra:
            _stop(process, conn)
        return self

    def top_up(self, count: int) -> Standby:
        """Start standbys until `count` wait (without batchfleet's secrets in their environment)."""
        # More than a few per core would only slow the start they are meant to speed up.
        count = min(count, 4 * (os.cpu_count() or 1))
        with self._lock:
            missing = 0 if self._closed else max(count - len(self._waiting) - self._starting, 0)
            self._starting += missing
        done = 0
        try:
            for _ in range(missing):
                started = self._start()
                done += 1
                with self._lock:
                    self._starting -= 1
                    keep = not self._closed
                    if keep:
                        self._waiting.append(started)
                if not keep:
                    _stop(started[0], started[1])  # closed meanwhile (the node is stopping)
        finally:
            with self._lock:
                self._starting -= missing - done  # the ones a failed start left unstarted
        return self

    def _start(self) -> Started:
        parent, child = self._ctx.Pipe()
        progress = self._ctx.RawValue("q", 0)
        process = self._ctx.Process(target=standby_main, args=(child, progress), name="batchfleet-standby")
        try:
            with secrets_withheld():
                process.start()
        finally:
            child.close()
        return process, parent, progress

    def take(self, name: str, spec: dict[str, Any]) -> Started | None:
        """A standby turned into child `name`; None when none is left alive."""
        while True:
            with self._lock:
                if not self._waiting:
                    return None
                process, conn, progress = self._waiting.pop(0)
            if not process.is_alive():
                _stop(process, conn)
                continue
            try:
                conn.send(("spec", name, spec))
            except (OSError, ValueError):
                _stop(process, conn)
                continue
            return process, conn, progress

    def close(self) -> None:
        """Stop the standbys not taken (each exits when its pipe closes)."""
        atexit.unregister(self.close)
        with self._lock:
            self._closed = True
            left, self._waiting = self._waiting, []
        for process, conn, _ in left:
            _stop(process, conn)


def _stop(process: BaseProcess, conn: Connection) -> None:
    """A standby holds nothing yet: killing it loses nothing and spares waiting for its imports."""
    conn.close()
    if process.is_alive():
        process.kill()
    process.join(timeout=5)
