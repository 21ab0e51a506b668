"""The storage interface and URI helpers; common/storage/registry.py maps schemes to implementations."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from common.errors import StorageError


class StoreUnreachable(StorageError):
    """The store did not answer even after its client's own retries: an outage, worth waiting out."""


class ObjectInfo(NamedTuple):
    """One listed object: its URI, its path relative to the listed root, its size.

    A named tuple, not a model: listings yield millions of these. `size` is None when the
    listing was asked not to read sizes (a local stat per file costs more than planning it).
    """

    uri: str
    rel: str
    size: int | None


class NameRun(NamedTuple):
    """Objects `uri_prefix + name` listed as `rel_prefix + name`, for each name (see Storage.list_names)."""

    uri_prefix: str
    rel_prefix: str
    names: list[str]


def is_remote(uri: str) -> bool:
    """A URI with a scheme (s3://, https://, wasbs://, ...), not a local path."""
    return "://" in uri


def uri_within(uri: str, root: str) -> bool:
    """True when `uri` is `root` or lies below it.

    Remote URIs (same scheme) compare segment by segment, and one with an empty, '.' or '..'
    segment is never within anything (no writer of ours makes such keys; a reader might treat
    them as a climb). Local paths are compared once resolved, so '..' and symlinks cannot lead out.
    """
    if is_remote(uri) != is_remote(root):
        return False
    if not is_remote(uri):
        try:
            return Path(uri).resolve().is_relative_to(Path(root).resolve())
        except (OSError, ValueError):
            return False
    scheme, _, rest = uri.partition("://")
    root_scheme, _, root_rest = root.partition("://")
    segments = rest.split("?", 1)[0].rstrip("/").split("/")
    if scheme.lower() != root_scheme.lower() or any(seg in ("", ".", "..") for seg in segments):
        return False
    base = [seg for seg in root_rest.split("/") if seg]
    return bool(base) and segments[: len(base)] == base


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

    def list_names(self, uri: str) -> Iterator[NameRun]:
        """Every object below `uri`, as `list` finds them without sizes, but a run of names at a time.

        Each run is (URI prefix, relative prefix, names): the objects `prefix + name`, listed as
        `rel prefix + name`. A planner builds a million plan lines from these without an object
        per file. Stores override this with a cheaper walk; by default, one run per object.
        """
        for info in self.list(uri, sizes=False):
            yield NameRun(info.uri, info.rel, [""])

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
