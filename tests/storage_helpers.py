"""A storage wrapper for tests that counts what is read (to prove ranged reads)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from common.storage import ObjectInfo, Storage
from common.storage.local import LocalStorage


class CountingStorage(Storage):
    """Wraps a storage (local files by default) and records every ranged GET and whole-object read."""

    def __init__(self, inner: Storage | None = None) -> None:
        self.inner = inner or LocalStorage()
        self.ranges: list[tuple[str, int, int]] = []
        self.whole_reads = 0

    def bytes_read(self) -> int:
        return sum(length for _, _, length in self.ranges)

    def read_bytes(self, uri: str) -> bytes:
        self.whole_reads += 1
        return self.inner.read_bytes(uri)

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        data = self.inner.read_range(uri, offset, length)
        self.ranges.append((uri, offset, len(data)))
        return data

    def write_bytes(self, uri: str, data: bytes) -> None:
        self.inner.write_bytes(uri, data)

    def exists(self, uri: str) -> bool:
        return self.inner.exists(uri)

    def size(self, uri: str) -> int:
        return self.inner.size(uri)

    def list(self, uri: str, sizes: bool = True) -> Iterator[ObjectInfo]:
        return self.inner.list(uri, sizes)

    def download(self, uri: str, dest: Path) -> None:
        self.inner.download(uri, dest)

    def upload(self, src: Path, uri: str) -> None:
        self.inner.upload(src, uri)

    def delete(self, uri: str) -> None:
        self.inner.delete(uri)

    def check_writable(self, uri: str) -> None:
        self.inner.check_writable(uri)
