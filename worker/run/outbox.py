"""A child's messages to its supervisor; outcomes of very short batches travel together.

Each message costs the node a wake-up, system calls and an unpickling, on threads that share
one GIL with dispatch and reporting. When batches take well under a millisecond, an outcome
may wait here while the next batches run (up to 8 outcomes, or until one has waited 2 ms when
the next one comes, and never once as many wait as tasks are left at hand: the supervisor tops
the pipe up as outcomes come back) and go with them as one message. The supervisor knows how many tasks the child has
started (a shared counter), so a batch that hangs or crashes behind a waiting outcome is still
the one blamed (see ChildPool._overran).
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from typing import Any

HOLD = 0.002  # seconds an outcome may wait for company, checked as each next one arrives
MOST = 8  # outcomes per message


class Outbox:
    """Sender for one child's pipe; outcomes go out in order, as ("done", [outcome, ...])."""

    def __init__(self, conn: Connection, hold: float = HOLD, most: int = MOST) -> None:
        self._conn = conn
        self._hold = hold
        self._most = most
        self._held: list[dict[str, Any]] = []
        self._since = 0.0

    @property
    def waiting(self) -> int:
        """Outcomes held, not yet sent."""
        return len(self._held)

    def put(self, outcome: dict[str, Any], hold: bool) -> None:
        """Queue an outcome; with `hold` it may wait for the next ones (another batch is at hand)."""
        self._held.append(outcome)
        if len(self._held) == 1:
            self._since = time.monotonic()
        if not hold or len(self._held) >= self._most or time.monotonic() - self._since >= self._hold:
            self.flush()

    def send(self, message: tuple[Any, ...]) -> None:
        """Any other message, after the outcomes waiting before it."""
        self.flush()
        self._conn.send(message)

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, []
            self._conn.send(("done", held))

    def close(self) -> None:
        self.flush()
