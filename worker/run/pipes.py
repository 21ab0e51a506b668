"""Waiting on a child's pipe without a selector per call.

`Connection.poll` builds, registers and closes a selector each time it is called: tens of
microseconds, paid per message by the supervisor and per batch by the child, on threads that
share a GIL with the rest of the node. On POSIX one `select.poll` call does the same job.
"""

from __future__ import annotations

import math
import select
import sys
from multiprocessing.connection import Connection

_POSIX = sys.platform != "win32"


def readable(conn: Connection, timeout: float | None) -> bool:
    """True once the pipe has a message (or was closed, so recv() will tell); False after `timeout` s."""
    if not _POSIX:
        return conn.poll(timeout)
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    wait_ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(poller.poll(wait_ms))
