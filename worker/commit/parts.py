"""The commit stage: a batch's rows and counts become one frame in the job area.

Locally each child process appends frames to its own segment file; on object storage each
frame is one PUT (see common/parts/frames.py for the format).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from common.parts.frames import header, make_ref
from common.parts.rows import RowFormat, encode_part
from common.storage import Storage, is_remote, join_uri


class PartWriter:
    """Commits one process's batches under <job area>/parts/<node>/ (a segment file named for the process
    and its node's session token; on object storage, one object per batch in a folder so named)."""

    def __init__(self, storage: Storage, folder_uri: str, name: str) -> None:
        self.storage = storage
        self.folder = folder_uri
        self.name = name  # the process, and its node's session token: no other writer has this name
        self.remote = is_remote(folder_uri)
        self._handle: BinaryIO | None = None
        self._path = ""
        if not self.remote:
            Path(folder_uri).mkdir(parents=True, exist_ok=True)
            self._path = str(Path(folder_uri, f"{name}.{os.getpid()}.seg"))
            # Unbuffered: a write cut short (a full disk) leaves nothing behind in a buffer that a
            # later commit would flush into the middle of its own frame.
            self._handle = open(self._path, "ab", buffering=0)

    def commit(self, batch_id: int, attempt: int, succeeded: int, failed: int, data: bytes) -> str:
        """Write one frame; return the reference the merger reads it back by."""
        head = header(batch_id, attempt, succeeded, failed, data)
        if self._handle is not None:
            frame = memoryview(head + data)
            while frame:
                frame = frame[self._handle.write(frame) or 0 :]
            # O_APPEND puts each write at the end of the file: where this one ended is known, where
            # it began only after the fact (a torn frame may lie before it).
            return make_ref(self._path, self._handle.tell() - len(data), len(data))
        # <node>/<process>.<session>/<batch>.<attempt>.part: the writer in the folder, so the name stays
        # one the coordinator rebuilds from the batch id (coordinator/follow/partrefs.py).
        uri = join_uri(self.folder, self.name, f"{batch_id:09d}.{attempt}.part")
        self.storage.write_bytes(uri, head + data)
        return make_ref(uri, len(head), len(data))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def commit_rows(
    parts: PartWriter, task: dict[str, Any], result: Any, rows: int, fmt: RowFormat | None
) -> dict[str, Any]:
    """One frame per batch: rows and counts together, so the commit is a single write.

    `fmt` is the append_row format, or None for summary_only (counts only). Returns the
    outcome fields of a committed try.
    """
    total = task["total"]
    succeeded = min(rows, total - task.get("missing", 0))
    data = encode_part(result, fmt) if fmt is not None else b""
    part = parts.commit(task["batch_id"], task["attempt"], succeeded, total - succeeded, data)
    return {"status": "committed", "succeeded": succeeded, "failed": total - succeeded, "part": part}
