"""Committed batch results ("parts"): self-describing frames, appended locally or one object each.

The worker writes them (worker/commit/parts.py); the coordinator reads and scans them here.

A frame is a header line `#bf <batch> <attempt> <succeeded> <failed> <length>` followed by
`length` bytes of rows. Locally each child process appends frames to its own segment file
(one write per batch: a file per batch costs ~200us here, more than the work it records);
on object storage each frame is one PUT. Either way a frame that is complete is committed,
and a torn one (a process killed mid-write) is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.storage import Storage, is_remote

_HEADER = re.compile(rb"#bf (\d+) (\d+) (\d+) (\d+) (\d+)\n")


@dataclass(frozen=True)
class PartRecord:
    """One committed batch as found in the store."""

    batch_id: int
    attempt: int
    succeeded: int
    failed: int
    ref: str


def header(batch_id: int, attempt: int, succeeded: int, failed: int, length: int) -> bytes:
    return b"#bf %d %d %d %d %d\n" % (batch_id, attempt, succeeded, failed, length)


def make_ref(uri: str, offset: int, length: int) -> str:
    return f"{uri}#{offset}+{length}"


def parse_ref(ref: str) -> tuple[str, int, int]:
    uri, _, span = ref.rpartition("#")
    offset, _, length = span.partition("+")
    return uri, int(offset), int(length)


def read_part(storage: Storage, ref: str) -> bytes:
    uri, offset, length = parse_ref(ref)
    return storage.read_range(uri, offset, length) if length else b""


class PartReader:
    """Reads parts back, keeping local segment files open (the merge reads thousands of frames)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._open: dict[str, BinaryIO] = {}

    def read(self, ref: str) -> bytes:
        uri, offset, length = parse_ref(ref)
        if not length:
            return b""
        if is_remote(uri):
            return self.storage.read_range(uri, offset, length)
        handle = self._open.get(uri)
        if handle is None:
            handle = self._open[uri] = open(uri, "rb")
        handle.seek(offset)
        return handle.read(length)

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def __enter__(self) -> PartReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan_parts(storage: Storage, parts_uri: str) -> Iterator[PartRecord]:
    """Every complete frame below parts_uri (for resume and coordinator restarts)."""
    for info in storage.list(parts_uri):
        if info.rel.endswith(".seg"):
            yield from _scan_segment(Path(info.uri))
        elif info.rel.endswith(".part"):
            head = storage.read_range(info.uri, 0, 128)
            match = _HEADER.match(head)
            if match and len(head) >= match.end():
                b, a, s, f, n = (int(x) for x in match.groups())
                if info.size == match.end() + n:
                    yield PartRecord(b, a, s, f, make_ref(info.uri, match.end(), n))


def _scan_segment(path: Path) -> Iterator[PartRecord]:
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        match = _HEADER.match(data, pos)
        if match is None:
            return  # torn or foreign bytes: nothing after them is trusted
        b, a, s, f, n = (int(x) for x in match.groups())
        end = match.end() + n
        if end > len(data):
            return  # the writer was killed mid-frame
        yield PartRecord(b, a, s, f, make_ref(str(path), match.end(), n))
        pos = end
