"""Committed batch results ("parts"): self-describing frames, appended locally or one object each.

The worker writes them (worker/commit/parts.py); the coordinator reads and scans them here.

A frame is a header line `#bf <batch> <attempt> <succeeded> <failed> <length> <crc>\\n` followed by
`length` bytes of rows; `<crc>` is the CRC-32 (8 hex digits) of the five numbers as written and
the rows. Locally each child process appends frames to its own segment file (one write per batch:
a file per batch costs ~200us here, more than the work it records); on object storage each frame
is one PUT. Either way a complete frame whose checksum holds is committed. A torn frame (a process
killed mid-write, a write cut short by a full disk) is skipped: the scanner looks for the next
header whose frame checks out, so frames appended after a torn one are still found.

Frames written before checksums existed (no `<crc>`) are still read, by their length alone.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from common.errors import BatchfleetError
from common.storage import Storage, is_remote

MAGIC = b"#bf "
_FIELDS = rb"#bf (\d{1,19}) (\d{1,9}) (\d{1,19}) (\d{1,19}) (\d{1,19})(?: ([0-9a-f]{8}))?\n"
_HEADER = re.compile(_FIELDS)
_HEADER_AT_END = re.compile(_FIELDS + rb"\Z")
HEADER_MAX = 128  # longer than any header the pattern accepts
WINDOW = 1 << 20  # bytes of a segment the scanner holds at a time
_CRC_STEP = 1 << 20  # bytes checksummed per read for frames larger than the window


class FrameMismatch(BatchfleetError):
    """A part reference does not point at the rows of a frame of the batch it was reported for."""


@dataclass(frozen=True)
class PartRecord:
    """One committed batch as found in the store."""

    batch_id: int
    attempt: int
    succeeded: int
    failed: int
    ref: str


def header(batch_id: int, attempt: int, succeeded: int, failed: int, data: bytes) -> bytes:
    """The header line of a frame holding `data`."""
    fields = b"%d %d %d %d %d" % (batch_id, attempt, succeeded, failed, len(data))
    return b"#bf %s %08x\n" % (fields, zlib.crc32(data, zlib.crc32(fields)))


def make_ref(uri: str, offset: int, length: int) -> str:
    return f"{uri}#{offset}+{length}"


def parse_ref(ref: str) -> tuple[str, int, int]:
    uri, _, span = ref.rpartition("#")
    offset, _, length = span.partition("+")
    return uri, int(offset), int(length)


def read_part(storage: Storage, ref: str) -> bytes:
    uri, offset, length = parse_ref(ref)
    return storage.read_range(uri, offset, length) if length else b""


READ_BUFFER = 1 << 20


class PartReader:
    """Reads parts back, keeping local segment files open (the merge reads thousands of frames)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._open: dict[str, BinaryIO] = {}

    def read(self, ref: str) -> bytes:
        uri, offset, length = parse_ref(ref)
        return self.read_span(uri, offset, length)

    def read_frame(self, uri: str, offset: int, length: int, batch_id: int) -> bytes:
        """The rows at `offset`, only if the frame header right before them is batch `batch_id`'s and
        gives their length (else FrameMismatch). An empty part holds no rows to check."""
        if not length:
            return b""
        start = max(0, offset - HEADER_MAX)
        window = self.read_span(uri, start, offset - start + length)
        return checked_rows(window, offset - start, batch_id, length, make_ref(uri, offset, length))

    def read_span(self, uri: str, offset: int, length: int) -> bytes:
        if not length:
            return b""
        if is_remote(uri):
            return self.storage.read_range(uri, offset, length)
        handle = self._open.get(uri)
        if handle is None:
            # Frames are read in order from files only ever appended to: a deep buffer serves most
            # of them without a system call (each one costs the merge thread a turn of the GIL).
            handle = self._open[uri] = open(uri, "rb", buffering=READ_BUFFER)
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


def checked_rows(window: bytes, head: int, batch_id: int, length: int, ref: str) -> bytes:
    """The rows after the first `head` bytes of `window`, once the frame header ending there proves
    them batch `batch_id`'s (its number and their length; the checksum is the scanner's business)."""
    start = window.rfind(MAGIC, 0, head)
    match = _HEADER_AT_END.match(window[:head], start) if start >= 0 else None
    rows = window[head:]
    if match is None or int(match[1]) != batch_id or not int(match[5]) == length == len(rows):
        found = f"batch {int(match[1])}'s frame" if match is not None else "no frame header"
        raise FrameMismatch(f"part {ref} of batch {batch_id} holds {found}: refusing to merge it")
    return rows


def scan_parts(storage: Storage, parts_uri: str) -> Iterator[PartRecord]:
    """Every complete frame below parts_uri (for resume and coordinator restarts), streamed."""
    for info in storage.list(parts_uri):
        if info.rel.endswith(".seg"):
            yield from scan_segment(info.uri)
        elif info.rel.endswith(".part"):
            head = storage.read_range(info.uri, 0, HEADER_MAX)
            match = _HEADER.match(head)
            if match:
                b, a, s, f, n = (int(x) for x in match.groups()[:5])
                # One PUT: the object is whole or absent, so its size is the check.
                if info.size == match.end() + n:
                    yield PartRecord(b, a, s, f, make_ref(info.uri, match.end(), n))


class _Window:
    """A sliding view of a file: at most WINDOW bytes (or one frame's header) held at a time."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.size = size
        self.start = 0  # file offset of data[0]
        self.data = b""

    def bytes_at(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (fewer at the end of the file)."""
        end = self.start + len(self.data)
        if offset < self.start or offset + length > end:
            if offset < self.start or offset >= end:
                self.handle.seek(offset)
                self.start, self.data = offset, self.handle.read(max(length, WINDOW))
            else:
                self.handle.seek(end)
                self.data = self.data[offset - self.start :] + self.handle.read(max(length, WINDOW))
                self.start = offset
        return self.data[offset - self.start : offset - self.start + length]

    def find(self, needle: bytes, offset: int) -> int:
        """The file offset of the next `needle` at or after `offset`, or -1."""
        while offset < self.size:
            chunk = self.bytes_at(offset, WINDOW)
            at = chunk.find(needle)
            if at >= 0:
                return offset + at
            if len(chunk) < len(needle):
                return -1
            offset += len(chunk) - len(needle) + 1
        return -1

    def crc(self, offset: int, length: int, seed: int) -> int:
        if length <= WINDOW:
            return zlib.crc32(self.bytes_at(offset, length), seed)
        self.handle.seek(offset)
        while length > 0:
            piece = self.handle.read(min(_CRC_STEP, length))
            if not piece:
                break
            seed = zlib.crc32(piece, seed)
            length -= len(piece)
        self.start, self.data = 0, b""  # the handle moved: the window is stale
        return seed


def scan_segment(path: str) -> Iterator[PartRecord]:
    """The committed frames of one segment file, in file order, holding one window at a time."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        window = _Window(handle, os.fstat(handle.fileno()).st_size)
        pos = 0
        while pos < window.size:
            record, end = _frame_at(window, path, pos)
            if record is not None:
                yield record
                pos = end
            else:  # torn or foreign bytes: look for the next frame that checks out
                pos = window.find(MAGIC, pos + 1)
                if pos < 0:
                    return


def _frame_at(window: _Window, path: str, pos: int) -> tuple[PartRecord | None, int]:
    """The frame starting at `pos` and where it ends, or (None, 0) unless it is whole and checks out."""
    match = _HEADER.match(window.bytes_at(pos, HEADER_MAX))
    if match is None:
        return None, 0
    b, a, s, f, n = (int(x) for x in match.groups()[:5])
    body = pos + match.end()
    end = body + n
    if end > window.size:
        return None, 0
    crc = match.group(6)
    if crc is not None:
        fields = match.group(0)[4 : match.start(6) - 1]
        if window.crc(body, n, zlib.crc32(fields)) != int(crc, 16):
            return None, 0
    return PartRecord(b, a, s, f, make_ref(path, body, n)), end
