"""A local tree's file names in sorted order, listed in a process of its own.

A coordinator lists its input while its embedded node runs batches on other threads, and
os.scandir lets go of the GIL for every entry it reads: under load each entry then waits for
its turn again, and a million files took seconds longer than the listing itself. Run as a
script (`python -I -S walker.py ROOT`) this module needs nothing but the standard library and
writes each folder's run of names to stdout as a pickled (base, prefix, names) tuple, so the
coordinator takes a folder per read.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator

Run = tuple[str, str, list[str]]  # (uri prefix, relative prefix, names): common.storage.base.NameRun


def sort_key(entry: os.DirEntry[str]) -> str:
    # Folders sort as "name/", so the order matches an S3 listing of the same keys.
    return entry.name + "/" if entry.is_dir() else entry.name


def walk_names(root: str, prefix: str = "") -> Iterator[Run]:
    """The files below root in sorted order, a folder's run of names at a time (no object per file)."""
    try:
        with os.scandir(root) as scan:
            entries = list(scan)
    except (FileNotFoundError, NotADirectoryError):
        return
    base = os.path.join(root, "")
    folders = [entry for entry in entries if entry.is_dir()]
    if not folders:  # most folders: a C-level sort of plain names
        names = sorted([entry.name for entry in entries if entry.is_file()])
        del entries  # a flat folder of a million files: keep its names, not its DirEntry objects
        if names:
            yield base, prefix, names
        return
    run: list[str] = []
    for entry in sorted(entries, key=sort_key):
        if entry.is_dir():
            if run:
                yield base, prefix, run
                run = []
            yield from walk_names(entry.path, f"{prefix}{entry.name}/")
        elif entry.is_file():
            run.append(entry.name)
    if run:
        yield base, prefix, run


def spawn(root: str, buffer: int = 1 << 20) -> subprocess.Popen[bytes] | None:
    """This module run as the lister of `root`; None where no interpreter can be started."""
    command = [sys.executable, "-I", "-S", __file__, root]
    try:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=buffer)
    except OSError:  # no interpreter to start (an embedded Python)
        return None


def _widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Let a big folder's names go into the pipe at once (Linux), so a listing started ahead of
    planning (common/storage/prelist.py) is finished by the time the planner reads it."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError, OverflowError, ValueError):
        pass  # not Linux, not a pipe, or over /proc/sys/fs/pipe-max-size: the default pipe works


def stop(proc: subprocess.Popen[bytes]) -> None:
    """A lister's end: killed when its listing was not read to the end, its pipes closed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def main(argv: list[str]) -> int:
    _widen_pipe(1)
    out = sys.stdout.buffer
    for run in walk_names(argv[1]):
        pickle.dump(run, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
