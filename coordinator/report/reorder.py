"""Lines that arrive out of order, written out in order, holding a bounded window in memory.

Each line has a unique index from 0 up (a batch id). A line is written as soon as every line
before it has been; lines that come early wait in memory, MEMORY_LINES of them at most, and then
are sorted and spilled to a run file beside the output, to be read back in order when their
turn comes. `close` writes whatever is left (after gaps, if some lines never came) in order.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MEMORY_LINES = 50_000
_ENTRY = struct.Struct("<qI")  # index, length of the line


class _Run:
    """A spilled, sorted run of lines, read back one at a time."""

    def __init__(self, path: Path, lines: list[tuple[int, bytes]]) -> None:
        self.path = path
        with open(path, "wb") as out:
            for index, line in lines:
                out.write(_ENTRY.pack(index, len(line)))
                out.write(line)
        self._in = open(path, "rb")  # closed in close()
        self.head: tuple[int, bytes] | None = None
        self.advance()

    def advance(self) -> None:
        raw = self._in.read(_ENTRY.size)
        if len(raw) < _ENTRY.size:
            self.head = None
            return
        index, length = _ENTRY.unpack(raw)
        self.head = (index, self._in.read(length))

    def rest(self) -> Iterator[tuple[int, bytes]]:
        while self.head is not None:
            yield self.head
            self.advance()

    def close(self) -> None:
        self._in.close()
        self.path.unlink(missing_ok=True)


class ReorderWindow:
    """Writes each added line to `out` in index order, as soon as the lines before it are written."""

    def __init__(self, out: BinaryIO, spill_dir: Path, memory: int = MEMORY_LINES) -> None:
        self.out = out
        self.next = 0  # the index of the next line to write
        self._spill_dir = spill_dir
        self._memory = memory
        self._held: dict[int, bytes] = {}
        self._runs: list[_Run] = []

    def add(self, index: int, line: bytes) -> None:
        if index == self.next:
            self.out.write(line)
            self.next += 1
            if self._held or self._runs:
                self._drain()
        elif index > self.next:
            self._held[index] = line
            if len(self._held) >= self._memory:
                self._spill()

    def _drain(self) -> None:
        while True:
            line = self._held.pop(self.next, None)
            if line is None:
                line = self._from_runs(self.next)
                if line is None:
                    return
            self.out.write(line)
            self.next += 1

    def _from_runs(self, index: int) -> bytes | None:
        for run in self._runs:
            if run.head is not None and run.head[0] == index:
                line = run.head[1]
                run.advance()
                if run.head is None:
                    run.close()
                    self._runs.remove(run)
                return line
        return None

    def _spill(self) -> None:
        lines = sorted(self._held.items())
        self._held.clear()
        self._runs.append(_Run(self._spill_dir / f"run-{id(self)}-{len(self._runs)}.bin", lines))

    def close(self) -> None:
        """Write every line still waiting, in order; the gaps stay gaps."""
        streams = [iter(sorted(self._held.items())), *(run.rest() for run in self._runs)]
        for _, line in heapq.merge(*streams, key=lambda entry: entry[0]):
            self.out.write(line)
        self._held.clear()
        for run in self._runs:
            run.close()
        self._runs.clear()
