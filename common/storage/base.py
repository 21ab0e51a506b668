"""The storage interface and URI helpers; common/storage/registry.py maps schemes to implementations."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


class ObjectInfo(NamedTuple):
    """One listed object: its URI, its path relative to the listed root, its size.

    A named tuple, not a model: listings yield millions of these. `size` is None when the
    listing was asked not to read sizes (a local stat per file costs more than planning it).
    """

    uri: str
    rel: str
    size: int | None


def is_remote(uri: str) -> bool:
    """A URI with a scheme (s3://, https://, wasbs://, ...), not a local path."""
    return "://" in uri


def join_uri(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URI with '/'."""
    if is_remote(uri):
        base = uri.rstrip("/")
        tail = "/".join(p.strip("/") for p in parts if p)
        return f"{base}/{tail}" if tail else base
    return str(Path(uri, *parts))


class Storage(ABC):
    """Whole-object operations; writes are atomic (temp + rename, or one PUT)."""

    @abstractmethod
    def read_bytes(self, uri: str) -> bytes: ...

    @abstractmethod
    def read_range(self, uri: str, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def write_bytes(self, uri: str, data: bytes) -> None: ...

    @abstractmethod
    def exists(self, uri: str) -> bool: ...

    @abstractmethod
    def size(self, uri: str) -> int: ...

    @abstractmethod
    def list(self, uri: str, sizes: bool = True) -> Iterator[ObjectInfo]:
        """Every object below `uri`, recursively, in sorted order, streamed.

        With `sizes=False` a store may leave `size` None when reading it costs extra.
        """

    @abstractmethod
    def download(self, uri: str, dest: Path) -> None: ...

    @abstractmethod
    def upload(self, src: Path, uri: str) -> None: ...

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Delete an object, or everything below a prefix."""

    @abstractmethod
    def check_writable(self, uri: str) -> None:
        """Raise StorageError with the reason when `uri` cannot be written."""

    def check_reachable(self, uri: str) -> str:
        """A health check that creates nothing: raise StorageError with the reason when `uri` cannot be
        reached (or, locally, could not be created); return how it stands, e.g. "writable"."""
        self.exists(uri)
        return "reachable"
