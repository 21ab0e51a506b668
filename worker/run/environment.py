"""A job's Python environment on one node: a virtual environment built with uv (pip when uv is
missing) from the spec's pip requirements, cached under the work root by a hash of what it holds.

The node's own Python is the base, so batchfleet's child runtime (and its dependencies) stay
importable in the children: they start from the node's import path and put the environment's
site-packages in front of it before user code loads (see Child.prepare).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import BatchfleetError
from common.messages import PythonEnvironment
from common.redact import without_own_secrets

log = logging.getLogger(__name__)

ENV_CACHE = "envs"
COMPLETE = ".batchfleet-complete"
TAIL_LINES = 5
BUILD_TIMEOUT = 1800.0
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_PIN = re.compile(r"^\s*(==|>=|<=|!=|=|>|<|~=)?\s*(\d+(?:\.\d+)*)(?:\.\*)?\s*$")


class EnvironmentBuildError(BatchfleetError):
    """Building a job's environment failed; `tail` holds the last lines of the build log."""

    def __init__(self, message: str, tail: str) -> None:
        super().__init__(message)
        self.tail = tail


@dataclass(frozen=True)
class BuiltEnvironment:
    folder: Path
    python: Path
    site_packages: list[str]
    cached: bool
    seconds: float
    notes: list[str]

    def describe(self) -> str:
        how = "cached" if self.cached else f"built in {self.seconds:.1f} s"
        return f"environment {self.folder.name} {how}"


def wanted(env: PythonEnvironment | None, mode: str | None) -> bool:
    """True when this job's children need an environment of their own."""
    return mode == "job" and env is not None and bool(env.requirements)


def python_pin_note(pin: str | None, version: tuple[int, ...] | None = None) -> str | None:
    """One line when the spec's python pin is not met by this node's Python (which is used anyway)."""
    if not pin:
        return None
    have = version or tuple(sys.version_info[:3])
    shown = ".".join(map(str, have))
    for part in pin.split(","):
        match = _PIN.match(part)
        if match is None:
            return f"python pin {pin!r} is not understood; the job runs with this node's Python {shown}"
        op, want = match.group(1) or "=", tuple(int(x) for x in match.group(2).split("."))
        mine = have[: len(want)]
        met = {
            "=": mine == want, "==": mine == want, "!=": mine != want, ">=": have >= want,
            "<=": mine <= want, ">": have > want and mine != want, "<": mine < want, "~=": have >= want,
        }[op]  # fmt: skip
        if not met:
            return f"the spec asks for python{pin.strip()}; this node runs Python {shown}, which the job uses"
    return None


def environment_key(env: PythonEnvironment) -> str:
    """Same requirements on the same Python and platform: the same environment."""
    basis = {
        "requirements": env.requirements,
        "python": list(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
        "base": sys.base_prefix,
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:24]


def ensure_environment(env: PythonEnvironment, work_root: Path, log_file: Path) -> BuiltEnvironment:
    """The environment's interpreter, built once per node (two jobs asking at once build it once)."""
    started = time.perf_counter()
    folder = work_root / ENV_CACHE / environment_key(env)
    notes = [*env.notes(), *filter(None, [python_pin_note(env.python)])]
    folder.parent.mkdir(parents=True, exist_ok=True)
    # The thread lock serves this process, the file lock the others on this work root (a second node
    # under the same id, or one sharing --work-dir): one builds, the others wait and find it built,
    # rather than removing a build in progress as "unfinished". The OS drops a dead holder's lock.
    from filelock import FileLock  # here: most nodes never build an environment

    with _lock_for(str(folder)), FileLock(folder.parent / f"{folder.name}.lock"):
        cached = (folder / COMPLETE).is_file()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a", encoding="utf-8") as out:
            out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} environment {folder.name} ({env.source or 'spec'})\n")
            for note in notes:
                out.write(f"note: {note}\n")
            if cached:
                out.write(f"cached: {folder}\n")
                os.utime(folder)  # used: kept by the cache pruning (worker/intake/leave.py)
            else:
                _build(env, folder, out, log_file)
    python = interpreter(folder)
    return BuiltEnvironment(folder, python, site_packages(folder), cached, time.perf_counter() - started, notes)


def interpreter(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def site_packages(folder: Path) -> list[str]:
    """Where the environment's packages are installed (the venv scheme of this Python)."""
    paths = {sysconfig.get_path(name, scheme="venv", vars={"base": str(folder), "platbase": str(folder)})
             for name in ("purelib", "platlib")}  # fmt: skip
    return sorted(paths)


def _build(env: PythonEnvironment, folder: Path, out, log_file: Path) -> None:  # type: ignore[no-untyped-def]
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)  # an earlier build that did not finish
    folder.parent.mkdir(parents=True, exist_ok=True)
    requirements = folder.parent / f"{folder.name}.requirements.txt"
    requirements.write_text("\n".join(env.requirements) + "\n", encoding="utf-8")
    uv = find_uv()
    python = interpreter(folder)
    if uv is not None:
        steps = [
            [uv, "venv", "--python", sys.executable, "--no-project", str(folder)],
            [uv, "pip", "install", "--python", str(python), "-r", str(requirements)],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(folder)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(requirements)],
        ]
    for step in steps:
        out.write(f"$ {' '.join(step)}\n")
        out.flush()
        try:
            # A build runs packages' own code: it starts without batchfleet's secrets, as children do.
            done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=BUILD_TIMEOUT, check=False, env=without_own_secrets(os.environ))  # fmt: skip
            code = done.returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.write(f"{exc}\n")
            code = -1
        if code != 0:
            out.flush()
            tail = last_lines(log_file)
            shutil.rmtree(folder, ignore_errors=True)
            raise EnvironmentBuildError(f"could not build the job's environment ({Path(step[0]).name} exit {code})",
                                        tail)  # fmt: skip
    (folder / COMPLETE).write_text(f"{platform.python_version()}\n", encoding="utf-8")
    out.write("built\n")


def find_uv() -> str | None:
    """uv from the `uv` package installed with batchfleet, else on PATH; None: use pip."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def last_lines(path: Path, count: int = TAIL_LINES) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-count:])


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())
