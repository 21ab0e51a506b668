"""The job's code snapshot: which files travel (ignore files, bound data left out), within limits,
stored once per content hash under `<store>/_code/<hash>/`.

As Azure ML does: `.amlignore` if present, else `.gitignore` (gitignore syntax), and our own
`.batchfleetignore` on top. Data bound as an input or output that lies inside the code folder
never travels with the code: every node reads it from where it is bound.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import StorageError, UsageError

if TYPE_CHECKING:
    import pathspec
from common.jobarea import CODE_ROOT, code_snapshot, code_snapshot_marker
from common.settings import parse_snapshot_limit
from common.signing import SNAPSHOT_SKIP_DIRS, SNAPSHOT_SKIP_SUFFIXES, snapshot_digest
from common.storage import StorageOptions, is_remote, join_uri, open_storage
from common.storage.base import Storage

log = logging.getLogger(__name__)

AML_IGNORE = ".amlignore"
GIT_IGNORE = ".gitignore"
OWN_IGNORE = ".batchfleetignore"
# Never code: version control and our own default store.
ALWAYS_SKIPPED = frozenset({".git", ".hg", ".svn", ".batchfleet"})


@dataclass
class CodeSelection:
    """The files of a snapshot: (relative POSIX path, local path, size), and what chose them."""

    folder: Path
    files: list[tuple[str, Path, int]] = field(default_factory=list)
    ignore_files: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # bound data inside the folder, left out
    uploaded: bool = False  # this submission stored it (the store did not have it)

    @property
    def size(self) -> int:
        return sum(size for _, _, size in self.files)

    def pairs(self) -> list[tuple[str, Path]]:
        return [(rel, path) for rel, path, _ in self.files]


def _ignore_spec(folder: Path) -> tuple[pathspec.PathSpec | None, list[str]]:
    used: list[str] = []
    lines: list[str] = []
    for name in (AML_IGNORE if (folder / AML_IGNORE).is_file() else GIT_IGNORE, OWN_IGNORE):
        path = folder / name
        if path.is_file():
            used.append(name)
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        return None, used
    import pathspec  # only here: every `batchfleet run` loads this module, few have an ignore file

    return pathspec.GitIgnoreSpec.from_lines(lines), used


def _inside(path: Path, folder: Path) -> str | None:
    """`path` relative to `folder` (POSIX), or None when it is not inside."""
    try:
        rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return None
    return rel.as_posix()


def select_code(folder: Path, bound: Iterable[str] = ()) -> CodeSelection:
    """Walk the code folder as a snapshot sees it; directory symlinks are followed once (loops stop)."""
    spec, used = _ignore_spec(folder)
    selection = CodeSelection(folder=folder, ignore_files=used)
    skipped: set[str] = set()
    for location in bound:
        if not is_remote(location) and "://" not in location:
            rel = _inside(Path(location), folder)
            if rel is not None and rel != ".":
                skipped.add(rel)
    selection.excluded = sorted(skipped)
    seen: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        base = Path(current).relative_to(folder).as_posix()
        prefix = "" if base == "." else base + "/"
        kept = []
        for name in sorted(dirs):
            rel = prefix + name
            if name in SNAPSHOT_SKIP_DIRS or name in ALWAYS_SKIPPED or rel in skipped:
                continue
            if spec is not None and spec.match_file(rel + "/"):
                continue
            kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            rel = prefix + name
            if name.endswith(SNAPSHOT_SKIP_SUFFIXES) or rel in skipped:
                continue
            if spec is not None and spec.match_file(rel):
                continue
            path = Path(current, name)
            if path.is_file():  # a dangling link is no code
                selection.files.append((rel, path, path.stat().st_size))
    return selection


def check_limits(selection: CodeSelection, limit: str | None) -> None:
    """Refuse a snapshot over the limits: one line naming the biggest folders and the file to write."""
    max_bytes, max_files = parse_snapshot_limit(limit)
    count, size = len(selection.files), selection.size
    if count <= max_files and size <= max_bytes:
        return
    folders: dict[str, list[int]] = {}
    for rel, _, nbytes in selection.files:
        top = rel.split("/", 1)[0] + "/" if "/" in rel else "(top level)"
        entry = folders.setdefault(top, [0, 0])
        entry[0] += 1
        entry[1] += nbytes
    biggest = sorted(folders.items(), key=lambda kv: (kv[1][1], kv[1][0]), reverse=True)[:3]
    named = ", ".join(f"{name} ({_files(files)}, {_mb(nbytes)})" for name, (files, nbytes) in biggest)
    target = selection.folder / (OWN_IGNORE if GIT_IGNORE in selection.ignore_files else AML_IGNORE)
    raise UsageError(
        f"code folder {selection.folder} would snapshot {_files(count)} ({_mb(size)}), over the limit of "
        f"{_files(max_files)} / {_mb(max_bytes)}; biggest: {named}",
        f"list what is not code in {target} (gitignore syntax), or raise --snapshot-limit",
    )


def _mb(nbytes: int) -> str:
    """A size as people read it: 512 B, 12.3 KB, 271.0 MB, 1.2 GB."""
    size = float(nbytes)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"


def _files(count: int) -> str:
    return f"{count:,} file" + ("" if count == 1 else "s")


def snapshot_code(
    folder: Path, store_root: str, options: StorageOptions, bound: Iterable[str] = (), limit: str | None = None
) -> tuple[str, str, CodeSelection]:
    """Upload the code once per content hash; return (code_uri, digest, selection).

    A snapshot whose marker exists is complete: a second job with the same code uploads nothing.
    Workers check the digest of what they download, so a changed snapshot is refused, never run.
    """
    selection = select_code(folder, bound)
    check_limits(selection, limit)
    digest = snapshot_digest(folder, selection.pairs())
    code_uri = code_snapshot(store_root, digest)
    marker = code_snapshot_marker(store_root, digest)
    storage = open_storage(code_uri, options)
    try:
        present = storage.exists(marker)
    except StorageError:
        present = False  # an S3 HEAD's error has no body to tell why; the upload's error does
    if present:
        log.info("code snapshot %s is already in the store", digest[:12])
        return code_uri, digest, selection
    _upload(storage, selection, code_uri)
    selection.uploaded = True
    manifest = "\n".join(f"{size} {rel}" for rel, _, size in selection.files)
    storage.write_bytes(marker, manifest.encode())
    log.info("code snapshot %s: %d files, %d bytes", digest[:12], len(selection.files), selection.size)
    return code_uri, digest, selection


def _upload(storage: Storage, selection: CodeSelection, code_uri: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8 if is_remote(code_uri) else 1) as pool:
        futures = [pool.submit(storage.upload, path, join_uri(code_uri, rel)) for rel, path, _ in selection.files]
        for future in futures:
            future.result()


def forget_snapshot(store_root: str, digest: str, options: StorageOptions) -> None:
    """Remove a snapshot a refused submission stored: the marker first, so no job takes a half-removed
    snapshot as complete."""
    marker = code_snapshot_marker(store_root, digest)
    storage = open_storage(marker, options)
    storage.delete(marker)
    storage.delete(code_snapshot(store_root, digest))
    if not is_remote(store_root):
        with contextlib.suppress(OSError):
            Path(join_uri(store_root, CODE_ROOT)).rmdir()  # only when no other snapshot is there
