"""A coordinator's local scratch folders: plan manifests, try logs, merge spill files, an embedded node's work.

Each is `bf-<kind>-<pid>-<random>` in the system temp folder and goes when its job ends. A
coordinator killed mid-job (kill -9, a power cut) cannot remove its own, and the try log of a
million tries is a hundred MB or more: the next job a coordinator starts on the machine sweeps the
folders whose process is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_NAME = re.compile(r"bf-(?:plan|trylog|merge|node)-(\d+)-")
QUIET = 60.0  # seconds a gone process's folder must have been left alone (a pid seen from another namespace)


def scratch_dir(kind: str, parent: Path | None = None) -> Path:
    """A new scratch folder of this process (the caller removes it), in `parent` or the temp folder."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"bf-{kind}-{os.getpid()}-", dir=parent))


def sweep_scratch(root: Path | None = None) -> int:
    """Remove scratch folders left by coordinators that are gone; returns how many."""
    folder = root or Path(tempfile.gettempdir())
    try:
        with os.scandir(folder) as scan:
            entries = [entry for entry in scan if _NAME.match(entry.name)]
    except OSError:
        return 0
    if not entries:
        return 0
    import psutil  # here: every run sweeps, few find anything to sweep

    swept, now = 0, time.time()
    for entry in entries:
        pid = int(_NAME.match(entry.name)[1])  # type: ignore[index]
        try:
            if pid == os.getpid() or psutil.pid_exists(pid) or not entry.is_dir(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime < QUIET:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        swept += 1
    if swept:
        log.info("removed %d scratch folders of coordinators that are gone", swept)
    return swept
