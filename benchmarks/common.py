"""Helpers shared by the benchmarks: cached inputs, timed commands, output checks, reports.

Standard library only, so a benchmark's spawned worker processes import it cheaply.
Benchmark scripts run as `python benchmarks/NAME.py`, which puts this folder first on
sys.path: this module then shadows the project's `common` package inside benchmark
scripts, so benchmarks talk to batchfleet through its CLI only.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "out" / "bench" / "cache"
DEFAULT_WORK = REPO / "out" / "bench"
_READY = "ready.json"


class BenchError(Exception):
    """A benchmark cannot go on; the message says why."""


@dataclass(frozen=True)
class FileSet:
    """A folder of generated files with deterministic content."""

    root: Path
    count: int
    size: int
    seed: str

    def names(self) -> list[str]:
        return [file_name(index) for index in range(self.count)]


def file_name(index: int) -> str:
    """Zero-padded, so name order is index order on every platform."""
    return f"file_{index:07d}.bin"


def file_bytes(index: int, size: int, seed: str) -> bytes:
    """Content of file `index`: the same bytes on every machine and run."""
    return hashlib.shake_256(f"{seed}:{index}".encode()).digest(size)


def ensure_files(cache: Path, count: int, size: int, seed: str) -> FileSet:
    """Generate `count` files of `size` bytes once; later calls reuse them.

    The files sit alone in FileSet.root (the marker lives beside it), so the folder
    can be handed to a job as an input as is.
    """
    home = cache / f"{seed}-{count}x{size}"
    files = FileSet(home / "files", count, size, seed)
    marker = home / _READY
    wanted = {"count": count, "size": size, "seed": seed}
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == wanted:
        return files
    print(f"generating {count} files of {size} B in {files.root} (once)", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    partial = home / "files.partial"
    partial.mkdir(parents=True)
    for index in range(count):
        (partial / file_name(index)).write_bytes(file_bytes(index, size, seed))
    partial.rename(files.root)
    marker.write_text(json.dumps(wanted), encoding="utf-8")
    return files


def tree_file(index: int, folders: int, count: int) -> str:
    """Path of file `index` in a tree of `count` files spread evenly over `folders` folders."""
    per_folder = -(-count // folders)
    return f"d{index // per_folder:05d}/{file_name(index)}"


def ensure_tree(cache: Path, count: int, folders: int, size: int, seed: str) -> FileSet:
    """Like ensure_files, with the files in `folders` sub-folders (file_name order is path order)."""
    home = cache / f"{seed}-{count}x{size}-in-{folders}"
    files = FileSet(home / "files", count, size, seed)
    marker = home / _READY
    wanted = {"count": count, "size": size, "seed": seed, "folders": folders}
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == wanted:
        return files
    print(f"generating {count} files of {size} B in {folders} folders under {files.root} (once)", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    partial = home / "files.partial"
    made: set[str] = set()
    for index in range(count):
        rel = tree_file(index, folders, count)
        folder = rel.split("/", 1)[0]
        if folder not in made:
            (partial / folder).mkdir(parents=True)
            made.add(folder)
        with open(partial / rel, "wb") as out:
            out.write(file_bytes(index, size, seed))
    partial.rename(files.root)
    marker.write_text(json.dumps(wanted), encoding="utf-8")
    return files


def warm(folder: Path) -> int:
    """Read every file once (below sub-folders too) so the first timed run does not pay for a cold disk cache."""
    total = 0
    for entry in os.scandir(folder):
        if entry.is_dir():
            total += warm(Path(entry.path))
        elif entry.is_file():
            with open(entry.path, "rb") as handle:
                total += len(handle.read())
    return total


def fresh_dir(path: Path) -> Path:
    """An empty folder at `path` (removed first when present)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def compile_bytecode() -> None:
    """Byte-compile the project and the benchmarks, as pip does when it installs a package.

    With PYTHONDONTWRITEBYTECODE set (as on our CI machines) an editable checkout would otherwise
    compile every module from source in every process, which a user's installed copy never does.
    """
    root = Path(__file__).resolve().parent.parent
    packages = ("batchfleet", "common", "coordinator", "worker", "azureml_user", "benchmarks")
    folders = [str(root / name) for name in packages]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], check=False, stdout=subprocess.DEVNULL)


def batchfleet_command() -> list[str]:
    """The `batchfleet` console script of the running interpreter's environment (byte-compiled)."""
    compile_bytecode()
    scripts = Path(sys.executable).parent
    for name in ("batchfleet", "batchfleet.exe"):
        candidate = scripts / name
        if candidate.exists():
            return [str(candidate)]
    found = shutil.which("batchfleet")
    if found:
        return [found]
    raise BenchError("batchfleet is not installed here; run `make venv` (or pip install -e .) first")


def run_timed(command: Sequence[str], log: Path, cwd: Path, timeout: float) -> float:
    """Run `command` to completion; return wall seconds, including interpreter start-up.

    Output goes to `log` (not a pipe), so a chatty command cannot stall on a full buffer.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        start = time.perf_counter()
        # Own session/group, so a timeout can stop the command's worker processes too.
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=os.name == "posix",
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
        )
        # A blocking wait: Popen.wait(timeout=...) polls with sleeps of up to 50 ms, which
        # rounded every time up to the next poll. A timer enforces the timeout instead.
        timer = threading.Timer(timeout, _stop, (process,))
        timer.start()
        try:
            code = process.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        if seconds >= timeout:
            raise BenchError(f"{command[0]} did not finish in {timeout:.0f} s; see {log}")
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise BenchError(f"{' '.join(command)} exited {code}; see {log}:\n" + "\n".join(tail))
    return seconds


def _stop(process: subprocess.Popen[bytes]) -> None:
    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        process.kill()
    process.wait()


def first_difference(left: Path, right: Path) -> str | None:
    """None when both files hold the same lines in the same order, else where they differ."""
    with left.open(encoding="utf-8", newline="") as a, right.open(encoding="utf-8", newline="") as b:
        number = 0
        while True:
            number += 1
            line_a, line_b = a.readline(), b.readline()
            if not line_a and not line_b:
                return None
            if line_a.rstrip("\r\n") != line_b.rstrip("\r\n"):
                return f"line {number}: {line_a.rstrip()!r} in {left} vs {line_b.rstrip()!r} in {right}"


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


@dataclass
class Side:
    """One contender's timings."""

    label: str
    how: str
    seconds: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.seconds)


def run_ratios(ours: Side, baseline: Side) -> list[float]:
    """ours / baseline of each run (the runs alternate, so each pair saw the same machine)."""
    return [a / b for a, b in zip(ours.seconds, baseline.seconds, strict=True)]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def report(
    name: str, ours: Side, baseline: Side, params: dict[str, Any], items: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Print both timings and the ratio ours/baseline, then a one-line JSON summary; return it.

    The ratio is the median of the per-run ratios: runs alternate between the two sides, so on a
    busy machine each pair shares its load, which the ratio of the two medians would not.
    """
    ratios = run_ratios(ours, baseline)
    ratio = statistics.median(ratios)
    print()
    print(f"{name}: " + ", ".join(f"{key} {value}" for key, value in params.items()))
    width = max(len(side.label) for side in (ours, baseline))
    for side in (baseline, ours):
        runs = ", ".join(f"{s:.2f}" for s in side.seconds)
        rate = items / side.median()
        print(
            f"  {side.label:<{width}}  {side.median():8.2f} s median  {rate:10.0f} items/s  runs [{runs}]  ({side.how})"
        )
    spread = f" (runs {min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    print(f"  ratio {ours.label} / {baseline.label}: {ratio:.2f}, median of {len(ratios)} per-run ratios{spread}")
    summary: dict[str, Any] = {
        "benchmark": name,
        **params,
        f"{ours.label}_s": round(ours.median(), 3),
        f"{baseline.label}_s": round(baseline.median(), 3),
        "ratio": round(ratio, 3),
        "ratios": [round(r, 3) for r in ratios],
        f"{ours.label}_runs": [round(s, 3) for s in ours.seconds],
        f"{baseline.label}_runs": [round(s, 3) for s in baseline.seconds],
        **(extra or {}),
        **machine(),
    }
    print(json.dumps(summary, sort_keys=False))
    return summary
