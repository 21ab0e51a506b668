"""What a node or a coordinator dropped as untrusted: counted by kind, the first of each kind logged.

Anyone who can publish can send these, so a flood must neither fill the log nor cost more
than a count; the counts go into the job's report.
"""

from __future__ import annotations

import logging
import threading


class Rejections:
    """Counts dropped messages by kind; logs the first of each kind with who sent it."""

    def __init__(self, logger: logging.Logger, where: str) -> None:
        self._log = logger
        self._where = where
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def drop(self, kind: str, sender: str, detail: str) -> None:
        with self._lock:
            seen = self._counts.get(kind, 0)
            self._counts[kind] = seen + 1
        if not seen:
            self._log.warning(
                "dropped on %s: %s from %s: %s; further ones are counted, not logged",
                self._where,
                kind,
                sender,
                detail,
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


def describe(counts: dict[str, int]) -> str:
    """'unsigned report: 3, forged announcement: 1' (largest first); empty when nothing was dropped."""
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
