"""Carry files the entry script writes to EntryScript().output_dir to the job's output location."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from common.storage import StorageOptions, join_uri, open_storage

log = logging.getLogger(__name__)


class OutputSync:
    """Uploads new or changed files below a local folder; safe to call from several threads."""

    def __init__(self, local: Path, remote_uri: str, options: StorageOptions) -> None:
        self.local = local
        self.remote_uri = remote_uri
        self.storage = open_storage(remote_uri, options)
        self._seen: dict[Path, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def push(self) -> int:
        """Upload what changed since the last push; return how many files."""
        with self._lock:
            sent = 0
            for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
                stat = path.stat()
                mark = (stat.st_size, stat.st_mtime_ns)
                if self._seen.get(path) == mark:
                    continue
                rel = path.relative_to(self.local).as_posix()
                self.storage.upload(path, join_uri(self.remote_uri, rel))
                self._seen[path] = mark
                sent += 1
            return sent


def upload_tree(local: Path, remote_uri: str, options: StorageOptions) -> int:
    """Copy a folder (a node's logs) to remote_uri once."""
    return OutputSync(local, remote_uri, options).push() if local.exists() else 0
