"""Fetch a job's code snapshot and refuse it unless its hash (and signature) match.

A node keeps one unpacked, read-only copy per content hash (`<work root>/code/<hash>/`): the
next job with the same code downloads nothing, and user code cannot change the copy another
job (or a child started later) will run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import threading
import uuid
from pathlib import Path

from common.errors import BatchfleetError
from common.messages import JobConfig
from common.safepath import safe_join
from common.signing import snapshot_digest
from common.storage import StorageOptions, is_remote, open_storage

log = logging.getLogger(__name__)

CODE_CACHE = "code"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class SnapshotError(BatchfleetError):
    """The code a job would run is not the code it was submitted with."""


def code_cache(work_root: Path, job: JobConfig) -> Path:
    """Where this node keeps the job's code: its cached copy, or the folder itself when unhashed
    (embedded mode runs the user's folder in place)."""
    if not job.code_hash:
        return Path(job.code_uri)
    return work_root / CODE_CACHE / job.code_hash


def fetch_code(job: JobConfig, code_dir: Path, options: StorageOptions) -> bool:
    """Make `code_dir` hold the job's snapshot, checked against its hash; True when it was downloaded.

    A cached copy was checked when it was made; a node fetching the same hash for two jobs at
    once downloads it once.
    """
    if not job.code_hash:
        return False
    with _lock_for(str(code_dir)):
        if code_dir.is_dir():
            touch(code_dir)
            return False
        partial = code_dir.with_name(f".{code_dir.name}.{uuid.uuid4().hex[:8]}")
        try:
            _download(job, partial, options)
            _check(job, partial)
            _read_only(partial)
            try:
                partial.rename(code_dir)
            except OSError:
                if not code_dir.is_dir():
                    raise
                # Another process on this work root (a second node under the same id) made the same
                # checked copy first: it is used, and ours goes (the thread lock spans one process only).
                return True
            code_dir.chmod(stat.S_IMODE(code_dir.stat().st_mode) & ~0o222)
        finally:
            if partial.exists():
                remove_tree(partial)
    return True


def _download(job: JobConfig, folder: Path, options: StorageOptions) -> None:
    storage = open_storage(job.code_uri, options)
    folder.mkdir(parents=True)
    found = False
    if is_remote(job.code_uri) or Path(job.code_uri).is_dir():
        for info in storage.list(job.code_uri):
            storage.download(info.uri, safe_join(folder, info.rel))
            found = True
    if not found:
        raise SnapshotError(
            f"code snapshot of job {job.job_id} is missing at {job.code_uri}",
            "resubmit the job; the store lost its code",
        )


def _check(job: JobConfig, folder: Path) -> None:
    digest = snapshot_digest(folder)
    if digest != job.code_hash:
        raise SnapshotError(
            f"code snapshot of job {job.job_id} does not match its hash "
            f"(expected {job.code_hash[:12]}, found {digest[:12]}); refusing to run it",
            "resubmit the job; the stored snapshot was changed after submission",
        )


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _read_only(folder: Path) -> None:
    """Files and folders without write bits: a child's init() cannot change the shared copy."""
    for current, dirs, files in os.walk(folder):
        for name in files:
            path = Path(current, name)
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        for name in dirs:
            path = Path(current, name)
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)


def touch(folder: Path) -> None:
    """Mark a cache entry as used now: entries unused for long are pruned (worker/intake/leave.py)."""
    with contextlib.suppress(OSError):
        os.utime(folder)


def remove_tree(folder: Path) -> None:
    """Remove a folder, read-only entries included (Windows refuses to delete read-only files)."""
    if not folder.exists():
        return
    with contextlib.suppress(OSError):
        folder.chmod(stat.S_IMODE(folder.stat().st_mode) | stat.S_IWRITE)
    for current, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = Path(current, name)
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWRITE)
    shutil.rmtree(folder, ignore_errors=True)
