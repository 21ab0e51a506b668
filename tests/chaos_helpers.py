"""Helpers for the chaos tier: an entry script that leaves evidence, exact output checks, process kills.

The entry script writes one line per item to a side file (`S node pid time` when run() starts on
the item, `E ...` when it is done with it), so a test can tell which process was mid-batch, how
many times each item ran, and whether a batch finished or was cut short. While a pause file
exists, run() waits after writing `S`, so a test can hold every child inside run().
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from common.messages import BatchMessage
from common.parts.frames import PartRecord, scan_parts
from common.storage import open_storage
from tests.fleet_helpers import COMPONENT, wait_for

T = TypeVar("T")

# kill -9 of process groups and SIGSTOP are POSIX; the product's Windows paths have their own tests.
CHAOS = [pytest.mark.chaos, pytest.mark.skipif(os.name == "nt", reason="chaos tests inject POSIX signals")]

ENTRY = """\
import os
import time

DELAY = {delay!r}
CALLS = {calls!r}
POISON = set({poison!r})
HANG = set({hang!r})
SLOW = {slow!r}
BROKEN_FLAG = {broken_flag!r}
BROKEN = set({broken!r})
PAUSE = {pause!r}
NODE = os.environ.get("BATCHFLEET_NODE_ID", "?")


def init():
    pass


def _mark(name, tag):
    if CALLS:
        with open(os.path.join(CALLS, name), "a") as handle:
            handle.write("%s %s %d %.3f\\n" % (tag, NODE, os.getpid(), time.time()))


def run(mini_batch):
    rows = []
    for path in mini_batch:
        name = os.path.basename(path)
        _mark(name, "S")
        while PAUSE and os.path.exists(PAUSE):
            time.sleep(0.02)
        if name in POISON:
            raise RuntimeError("poison item " + name)
        if name in HANG:
            time.sleep(3600)
        if name in BROKEN and BROKEN_FLAG and os.path.exists(BROKEN_FLAG):
            raise RuntimeError("broken item " + name)
        with open(path) as handle:
            text = handle.read().strip()
        time.sleep(DELAY + SLOW.get(name, 0.0))
        rows.append(name + " " + text)
        _mark(name, "E")
    return rows
"""


@dataclass
class EntryOptions:
    """What the chaos entry script does per item."""

    delay: float = 0.05
    calls: Path | None = None
    poison: set[str] = field(default_factory=set)
    hang: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)
    broken_flag: Path | None = None
    broken: set[str] = field(default_factory=set)
    pause: Path | None = None  # while this file exists, run() waits inside run() before each item

    def render(self) -> str:
        flag = str(self.broken_flag) if self.broken_flag else None
        return ENTRY.format(
            delay=self.delay, calls=str(self.calls) if self.calls else None, poison=sorted(self.poison),
            hang=sorted(self.hang), slow=self.slow, broken_flag=flag, broken=sorted(self.broken),
            pause=str(self.pause) if self.pause else None,
        )  # fmt: skip


def item_name(i: int) -> str:
    return f"item{i:05d}.txt"


def item_value(i: int) -> str:
    return f"v{i}-{hashlib.sha1(str(i).encode()).hexdigest()[:10]}"


def expected_lines(count: int, skip: Iterable[str] = ()) -> list[str]:
    """The merged rows a job over `count` items must produce, less the items named in skip."""
    left_out = set(skip)
    return [f"{item_name(i)} {item_value(i)}" for i in range(count) if item_name(i) not in left_out]


def write_items(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / item_name(i)).write_text(item_value(i))
    return folder


def put_items(client, bucket: str, prefix: str, count: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(count):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{item_name(i)}", Body=item_value(i).encode())


def make_component(root: Path, entry: EntryOptions) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "component.yaml").write_text(COMPONENT)
    (root / "entry.py").write_text(entry.render())
    return root / "component.yaml"


# exact output


def digest(lines: Iterable[str]) -> str:
    """sha256 of the sorted lines: equal digests mean the same rows, each as often."""
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def assert_exactly_once(merged: str, expected: list[str]) -> None:
    """Count, content and multiplicity of the merged rows, with a readable difference on failure."""
    got = merged.splitlines()
    if len(got) == len(expected) and digest(got) == digest(expected):
        return
    have, want = Counter(got), Counter(expected)
    doubled = sorted(line for line, n in have.items() if n > 1)[:5]
    missing = sorted((want - have).elements())[:5]
    extra = sorted((have - want).elements())[:5]
    raise AssertionError(
        f"merged output: {len(got)} rows, expected {len(expected)}; duplicated {doubled}, "
        f"missing {missing}, unexpected {extra}"
    )


# evidence from the entry script's side files


def marks(calls: Path) -> dict[str, list[tuple[str, str, int]]]:
    """item name -> [(tag, node, pid), ...] in the order written."""
    found: dict[str, list[tuple[str, str, int]]] = {}
    for path in calls.iterdir():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                found.setdefault(path.name, []).append((parts[0], parts[1], int(parts[2])))
    return found


def starts(calls: Path) -> Counter[str]:
    """How many times run() started on each item."""
    return Counter({name: sum(1 for m in seen if m[0] == "S") for name, seen in marks(calls).items()})


def running(calls: Path, node: str | None = None) -> dict[str, int]:
    """Items started and not finished (item -> pid), optionally on one node only."""
    open_items: dict[str, int] = {}
    for name, seen in marks(calls).items():
        tag, where, pid = seen[-1]
        if tag == "S" and (node is None or where == node):
            open_items[name] = pid
    return open_items


def finished_by(calls: Path, name: str, pid: int) -> bool:
    return any(tag == "E" and p == pid for tag, _, p in marks(calls).get(name, []))


def last_mark_time(calls: Path) -> float:
    """When the entry script last wrote a mark (epoch seconds)."""
    return max(float(line.split()[3]) for path in calls.iterdir() for line in path.read_text().splitlines())


def total_starts(calls: Path) -> int:
    return sum(starts(calls).values())


# processes


def spawned_children(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The worker's user-code children (spawn start method), not its resource tracker."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for kid in kids:
        try:
            if any("spawn_main" in part for part in kid.cmdline()):
                found.append(kid)
        except psutil.Error:
            continue
    return found


def kill_child_in_run(calls: Path, node: str, children: list[psutil.Process]) -> int | None:
    """kill -9 a child that is inside run() (frozen first, so the check cannot race); its pid or None."""
    for child in children:
        try:
            child.suspend()
        except psutil.Error:
            continue
        try:
            if child.pid in running(calls, node).values():
                child.kill()
                return child.pid
        finally:
            with suppress(psutil.Error):
                child.resume()  # a no-op on a killed one; never leave a live child frozen
    return None


def freeze_when_busy(proc: subprocess.Popen[bytes], calls: Path, node: str, timeout: float = 30) -> dict[str, int]:
    """SIGSTOP a node's whole group at a moment when one of its children is inside run().

    Returns the items being run then (item -> pid); the group stays stopped for the caller to kill.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.killpg(proc.pid, signal.SIGSTOP)
        busy = running(calls, node)
        if busy:
            return busy
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"{node} was never seen inside run()")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 a process started in its own session, with everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def start_coordinator(*args: str | Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`batchfleet ...` in its own session, output to a file (for runs the test interferes with)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "batchfleet", *map(str, args)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


@contextmanager
def coordinator_run(*args: str | Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """start_coordinator for a `with` block: however the block ends, the coordinator and what it
    started are killed and reaped. A Popen still running when it is garbage-collected warns
    (ResourceWarning), and with warnings as errors that fails whichever later test it happens in."""
    proc = start_coordinator(*args, env=env, log=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_group(proc)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"{proc.args!r} still running after {timeout:g}s:\n{tail(log)}") from None


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


# the store and the job's reports


def only_job(store: Path, timeout: float = 30) -> str:
    """The id of the one job in a local store, once its plan is published."""
    assert wait_for(lambda: any((d / "published").exists() for d in store.glob("*/")), timeout), (
        f"no published job under {store}"
    )
    jobs = [d.name for d in store.iterdir() if d.is_dir() and d.name != "_code"]  # _code: shared snapshots
    assert len(jobs) == 1, jobs
    return jobs[0]


def frames(area: str) -> list[PartRecord]:
    """Every complete frame committed for a job, duplicates included."""
    storage = open_storage(area)
    return list(scan_parts(storage, f"{area.rstrip('/')}/parts"))


def node_of(record: PartRecord) -> str:
    """The node whose folder holds a frame: <area>/parts/<node>/..."""
    return record.ref.replace("\\", "/").split("/parts/", 1)[1].split("/", 1)[0]


def committed_ids(area: str) -> set[int]:
    return {record.batch_id for record in frames(area)}


def plan(area: Path) -> dict[int, list[str]]:
    """batch id -> item names, from the job's stored plan."""
    found = {}
    for line in (area / "plan.jsonl").read_text().splitlines():
        message = BatchMessage.model_validate_json(line)
        found[message.batch_id] = [item.name.rsplit("/", 1)[-1] for item in message.items]
    return found


def batch_of(area: Path) -> dict[str, int]:
    return {name: batch for batch, names in plan(area).items() for name in names}


def report_rows(output: Path, name: str) -> list[dict[str, str]]:
    """Rows of logs/sys/job_report/<name> (processed_mini-batches.csv or attempts.csv)."""
    text = (output / "logs" / "sys" / "job_report" / name).read_text()
    return list(csv.DictReader(text.splitlines()))


def state(area: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((area / "state.json").read_text())
    return data


def wait_value(probe: Callable[[], T | None], timeout: float, interval: float = 0.1) -> T | None:
    """The first value of probe() that is not None, or None after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(interval)
    return None


class Stopwatch:
    """Seconds since creation, for the figures a chaos test prints."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.start
