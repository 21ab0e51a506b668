"""Object keys that would land on one local file on a worker (`a/b`, `a\\b`, `a//b`) are refused at
planning, naming both: a node downloads a batch's objects by common/safepath.safe_join, and one
would silently overwrite the other while both counted as succeeded.

Only keys that are not already in that form can collide, and they are rare: each is checked
against the others like it and against the object its local form names (one HEAD), so a
listing of a million plain keys costs a few substring scans per listing page and holds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from common.errors import StorageError, UsageError
from common.messages import InputBinding
from common.safepath import UnsafePathError, local_key
from common.storage import NameRun, ObjectInfo, Storage, join_uri

# Where a key can differ from its local form: a backslash, an empty or '.' part, a leading or trailing '/'.
_MARKS = ("\\", "//", "/./", "\n./", "\n/", "/\n", "/.\n")


class Collisions:
    """Remembers the keys seen that are not in local form; raises at the first that collides."""

    def __init__(self, binding: InputBinding, storage: Storage) -> None:
        self.binding = binding
        self.storage = storage
        self._odd: dict[str, str] = {}  # local form -> the first key not already in that form

    def check(self, rel: str) -> None:
        try:
            local = local_key(rel)
        except UnsafePathError:
            return  # refused at download, as a failed item with the reason
        if local == rel:
            return
        other = self._odd.get(local) or (local if self._is_object(join_uri(self.binding.uri, local)) else None)
        if other is not None:
            raise UsageError(
                f"input {self.binding.name}: object keys {other!r} and {rel!r} would land on one local file "
                f"({local!r}) on a worker",
                "rename one of them; '\\', '//' and '.' parts of keys are read as '/' on every node",
            )
        self._odd[local] = rel

    def listing(self, infos: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
        for info in infos:
            self.check(info.rel)
            yield info

    def runs(self, runs: Iterator[NameRun]) -> Iterator[NameRun]:
        for run in runs:
            blob = "\n" + "\n".join(f"{run.rel_prefix}{name}" for name in run.names[:1]) + "\n"
            names = "\n" + "\n".join(run.names) + "\n"
            if any(mark in names for mark in _MARKS) or any(mark in blob for mark in _MARKS):
                for name in run.names:
                    self.check(f"{run.rel_prefix}{name}")
            yield run

    def _is_object(self, uri: str) -> bool:
        try:
            self.storage.size(uri)
        except StorageError:
            return False
        return True
