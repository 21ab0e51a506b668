"""Local file system storage."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path

from common.errors import StorageError
from common.storage import walker
from common.storage.base import NameRun, ObjectInfo, Storage

PIPE_BUFFER = 1 << 20  # bytes read from the lister at a time


def _walk_sorted(root: str, prefix: str = "", sizes: bool = True) -> Iterator[ObjectInfo]:
    """Files below root in sorted order, one folder in memory at a time."""
    try:
        with os.scandir(root) as scan:
            entries = list(scan)
    except FileNotFoundError:
        return
    # Most folders hold only files: then a C-level key sorts them (a million names in ~1 s less).
    entries.sort(key=walker.sort_key if any(e.is_dir() for e in entries) else attrgetter("name"))
    for entry in entries:
        if entry.is_dir(follow_symlinks=True):
            yield from _walk_sorted(entry.path, f"{prefix}{entry.name}/", sizes)
        elif entry.is_file(follow_symlinks=True):
            size = entry.stat(follow_symlinks=True).st_size if sizes else None
            yield ObjectInfo(entry.path, prefix + entry.name, size)


def walk_elsewhere(root: str, proc: subprocess.Popen[bytes] | None = None) -> Iterator[NameRun]:
    """walker.walk_names(root) run in a child process (`proc`, when one was started ahead), streamed."""
    proc = proc or walker.spawn(root, PIPE_BUFFER)
    if proc is None:  # list here
        yield from (NameRun(*run) for run in walker.walk_names(root))
        return
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while True:
            try:
                run = pickle.load(proc.stdout)
            except EOFError:
                break
            yield NameRun(*run)
        error = proc.stderr.read().decode(errors="replace").strip().splitlines()
        if proc.wait() != 0:
            raise StorageError(f"cannot list {root}: {error[-1] if error else f'lister exited {proc.returncode}'}")
    finally:
        walker.stop(proc)  # kills it when the caller stopped early


class LocalStorage(Storage):
    def read_bytes(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        try:
            with open(uri, "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = Path(uri)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc

    def exists(self, uri: str) -> bool:
        return Path(uri).exists()

    def size(self, uri: str) -> int:
        try:
            return Path(uri).stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot stat {uri}: {exc.strerror or exc}") from exc

    def list(self, uri: str, sizes: bool = True) -> Iterator[ObjectInfo]:
        root = Path(uri)
        if root.is_file():
            yield ObjectInfo(uri=str(root), rel=root.name, size=root.stat().st_size)
            return
        yield from _walk_sorted(str(root), sizes=sizes)

    def list_names(self, uri: str) -> Iterator[NameRun]:
        root = Path(uri)
        if root.is_file():
            yield NameRun(str(root)[: -len(root.name)], "", [root.name])
            return
        yield from walk_elsewhere(str(root))

    def download(self, uri: str, dest: Path) -> None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(uri, dest)
        except OSError as exc:
            raise StorageError(f"cannot copy {uri}: {exc.strerror or exc}") from exc

    def upload(self, src: Path, uri: str) -> None:
        """Copy a file in as a stream (a merged output or a plan may be hundreds of MB), then rename."""
        path = Path(uri)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc

    def delete(self, uri: str) -> None:
        path = Path(uri)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def check_reachable(self, uri: str) -> str:
        path = Path(uri)
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            raise StorageError(f"{uri} is not writable: {existing} is not a folder", "choose a folder you can write to")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise StorageError(f"{uri} is not writable: {existing} is read-only to this user",
                               "choose a folder you can write to")  # fmt: skip
        return "writable" if existing == path else f"not created yet ({existing} is writable)"

    def check_writable(self, uri: str) -> None:
        path = Path(uri)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".bf-probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(
                f"{uri} is not writable: {exc.strerror or exc}", "choose a folder you can write to"
            ) from exc
