"""Local input folders listed ahead, while a run still loads its modules and resolves its spec.

Listing a folder of many files is the first thing planning waits for, and nothing about it
depends on the spec: `batchfleet run` starts the lister for each --input that names a local
folder, and the planner takes its output when it gets there (coordinator/plan/files.py).
A listing nobody takes (a table, a partitioned input, an error before planning) is killed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from common.storage import walker  # standard library only: this module loads before anything else of a run

if TYPE_CHECKING:
    from common.storage.base import NameRun


class Prelisted:
    """Lister processes started ahead, by the folder they list."""

    def __init__(self) -> None:
        self._walks: dict[str, subprocess.Popen[bytes]] = {}

    def __contains__(self, path: str) -> bool:
        return _root(path) in self._walks

    def start(self, path: str) -> None:
        """List `path` now, when it is a local folder (anything else is left to the planner)."""
        root = _root(path)
        if root in self._walks or not os.path.isdir(root):
            return
        proc = walker.spawn(root)
        if proc is not None:
            self._walks[root] = proc

    def take(self, uri: str) -> Iterator[NameRun] | None:
        """The listing of local folder `uri`, when one was started for it (each is taken once)."""
        if "://" in uri:
            return None
        root = _root(uri)
        proc = self._walks.pop(root, None)
        if proc is None:
            return None
        from common.storage.local import walk_elsewhere

        return walk_elsewhere(root, proc)

    def close(self) -> None:
        """Stop the listings not taken."""
        walks, self._walks = self._walks, {}
        for proc in walks.values():
            walker.stop(proc)


def _root(path: str) -> str:
    # As the spec resolves a local --input (coordinator/spec/loader.located) and LocalStorage lists it.
    return str(Path(os.path.abspath(os.path.expanduser(path))))
