"""Local listings come from a lister process (common/storage/walker.py) and read as the in-process walk."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from common.errors import StorageError
from common.storage import local, walker
from common.storage.base import NameRun
from common.storage.local import LocalStorage

NAMES = ["b.txt", "a.txt", "new\nline.txt", "tab\tand,comma.txt", 'a "quoted" name', "ünïcödé-名前.txt", "z.txt"]


def tree(root: Path) -> Path:
    for name in NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    for sub in ("m", "m/deeper", "c"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / "f.txt").write_text("y")
    (root / "empty").mkdir()
    (root / "link-to-c").symlink_to(root / "c")
    return root


def test_the_lister_process_gives_the_in_process_walk_run_for_run(tmp_path: Path) -> None:
    root = tree(tmp_path / "in")
    got = list(LocalStorage().list_names(str(root)))
    assert got == [NameRun(*run) for run in walker.walk_names(str(root))]
    listed = [run.rel_prefix + name for run in got for name in run.names]
    assert len(listed) == len(NAMES) + 4 and listed.index("c/f.txt") < listed.index("link-to-c/f.txt")
    assert "new\nline.txt" in listed and "link-to-c/f.txt" in listed and all(Path(r.uri_prefix).is_dir() for r in got)


def test_a_lister_that_fails_is_one_storage_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fails.py"
    script.write_text("import sys\nsys.stderr.write('PermissionError: no access to d007\\n')\nsys.exit(3)\n")
    monkeypatch.setattr(walker, "__file__", str(script))
    with pytest.raises(StorageError, match=r"cannot list .*: PermissionError: no access to d007$"):
        list(LocalStorage().list_names(str(tree(tmp_path / "in"))))


def test_without_an_interpreter_to_start_it_lists_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree(tmp_path / "in")
    monkeypatch.setattr(walker.sys, "executable", str(tmp_path / "no-python"))
    assert list(LocalStorage().list_names(str(root))) == [NameRun(*run) for run in walker.walk_names(str(root))]


def test_a_listing_left_early_stops_its_lister(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    runs = LocalStorage().list_names(str(tree(tmp_path / "in")))
    assert isinstance(runs, types.GeneratorType)
    next(runs)
    runs.close()
    assert started and started[0].poll() is not None


def test_the_walker_runs_as_a_plain_script(tmp_path: Path) -> None:
    """-I -S: no site-packages and none of our packages; the standard library is enough."""
    root = tree(tmp_path / "in")
    out = subprocess.run([sys.executable, "-I", "-S", walker.__file__, str(root)], capture_output=True, check=True)
    assert out.stdout and not out.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe sizes are a Linux setting")
def test_the_lister_widens_its_pipe_so_a_listing_started_ahead_can_finish() -> None:
    import fcntl

    most = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    read, write = os.pipe()
    try:
        before = fcntl.fcntl(write, fcntl.F_GETPIPE_SZ)
        walker._widen_pipe(write)
        widened = fcntl.fcntl(write, fcntl.F_GETPIPE_SZ)
        # 1 MiB where the system allows it (a user over its pipe quota keeps the default, unharmed)
        assert widened == 1 << 20 if most >= 1 << 20 else widened == before
        walker._widen_pipe(-1)  # not a pipe (a lister writing to a file): no error
    finally:
        os.close(read)
        os.close(write)
