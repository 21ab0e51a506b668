"""Carry files the entry script writes to EntryScript().output_dir, and a node's logs of a job,
to the job's output location."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from common.redact import redact
from common.storage import StorageOptions, join_uri, open_storage

log = logging.getLogger(__name__)


class OutputSync:
    """Uploads new or changed files below a local folder; safe to call from several threads."""

    def __init__(
        self, local: Path, remote_uri: str, options: StorageOptions, masked: Iterable[str] | None = None
    ) -> None:
        self.local = local
        self.remote_uri = remote_uri
        self.storage = open_storage(remote_uri, options)
        # For logs: known secrets (and anything shaped like one) masked on the way out.
        self.masked = None if masked is None else list(masked)
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
                if self.masked is None:
                    self.storage.upload(path, join_uri(self.remote_uri, rel))
                else:
                    self._upload_masked(path, join_uri(self.remote_uri, rel))
                self._seen[path] = mark
                sent += 1
            return sent

    def _upload_masked(self, path: Path, uri: str) -> None:
        """A text file line by line through `redact` (bytes kept as they are, whatever the encoding)."""
        with tempfile.TemporaryDirectory(prefix="bf-logs-") as tmp:
            clean = Path(tmp) / path.name
            with open(path, "rb") as src, open(clean, "wb") as out:
                for line in src:
                    text = line.decode("utf-8", "surrogateescape")
                    out.write(redact(text, self.masked or ()).encode("utf-8", "surrogateescape"))
            self.storage.upload(clean, uri)


def upload_tree(local: Path, remote_uri: str, options: StorageOptions, masked: Iterable[str] | None = None) -> int:
    """Copy a folder (a node's logs) to remote_uri once; with `masked`, secrets are masked."""
    return OutputSync(local, remote_uri, options, masked).push() if local.exists() else 0
