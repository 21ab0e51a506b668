"""User code starts with the node's environment minus batchfleet's own secrets.

A spawned child inherits this process's environment as it is when the child starts, so the
secrets are taken out for that moment (under a lock: children start from several threads)
and put back. Nothing else in the node reads them after start-up; the signing key and the
broker URL were read into the node's settings then. The spawn start method also hands the
child this process's sys.argv (`--broker URL`, `--signing-key-file PATH`): the child gets the
program name alone.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from common.redact import is_own_secret

_SPAWNING = threading.Lock()


@contextmanager
def secrets_withheld() -> Iterator[None]:
    """While in this block, batchfleet's secrets are out of os.environ (start children here)."""
    with _SPAWNING:
        held = {name: os.environ.pop(name) for name in list(os.environ) if is_own_secret(name)}
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            yield
        finally:
            sys.argv = argv
            os.environ.update(held)
