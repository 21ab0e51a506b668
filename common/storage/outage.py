"""Waiting out a store that does not answer: a worker's downloads (a try is not failed over a
store that is down for a minute) and the coordinator's writes at the end of a job (its results are
in by then; failing the command would leave the job "running" and its logs unwritten). The merge
has its own loop (coordinator/merger.py), which also follows the tally while it waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from common.storage.base import StoreUnreachable

log = logging.getLogger(__name__)

T = TypeVar("T")
PATIENCE = 300.0  # seconds an end-of-job write waits out an unreachable store
BACKOFF_MAX = 8.0


def wait_out(step: Callable[[], T], what: str, patience: float = PATIENCE) -> T:
    """`step()`, tried again with capped backoff while the store is unreachable, up to `patience` seconds."""
    deadline, delay = time.monotonic() + patience, 0.5
    while True:
        try:
            return step()
        except StoreUnreachable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s waits for the store: %s; trying again in %.1f s", what, exc.line(), delay)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
