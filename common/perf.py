"""Resource use of a process tree, sampled with psutil like Azure ML's node_resource_usage.csv."""

from __future__ import annotations

import csv
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import psutil

logger = logging.getLogger(__name__)

CSV_FIELDS = ("timestamp", "epoch", "node_id", "cpu_percent", "memory_percent", "rss_bytes", "process_count")


def _gone() -> tuple[type[Exception], ...]:
    """What psutil raises when a child exits between listing and reading it: that child is simply gone."""
    import psutil

    return (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


class PerfSample(BaseModel):
    """One reading of a node's process tree."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    at: float = Field(description="Epoch seconds.")
    node_id: str
    cpu_percent: float = Field(ge=0, description="CPU of the tree as a share of the whole machine, 0-100.")
    memory_percent: float = Field(ge=0, description="RSS of the tree as a share of physical memory.")
    rss_bytes: int = Field(ge=0, description="Resident memory summed over the tree.")
    process_count: int = Field(ge=0)


class PerfSampler:
    """Samples a process and its children on a daemon thread every `interval` seconds."""

    def __init__(self, node_id: str, interval: float = 2.0, pid: int | None = None, max_samples: int = 100_000):
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.node_id = node_id
        self.interval = interval
        self.pid = os.getpid() if pid is None else pid
        # A worker service may run for weeks; keep the newest readings only.
        self._samples: deque[PerfSample] = deque(maxlen=max_samples)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # cpu_percent(None) compares against the previous call on the same Process object, so keep them.
        self._procs: dict[int, psutil.Process] = {}
        self._cpus = 0  # read with the first sample, on the sampler's thread: loading psutil takes
        self._total_memory = 0  # tens of ms that a job's start must not wait for

    def start(self) -> PerfSampler:
        """Start sampling; the first reading is taken at once."""
        if self._thread is not None:
            raise RuntimeError("PerfSampler already started")
        self._thread = threading.Thread(target=self._loop, name=f"perf-{self.node_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[PerfSample]:
        """Stop sampling and return every sample taken."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval))
        return self.samples()

    def samples(self) -> list[PerfSample]:
        """A copy of the samples so far."""
        with self._lock:
            return list(self._samples)

    def _loop(self) -> None:
        while True:
            try:
                sample = self.sample_once()
            except Exception:
                # Sampling is a side show: it must never take the job down.
                logger.debug("perf sample of pid %s failed", self.pid, exc_info=True)
                sample = None
            if sample is not None:
                with self._lock:
                    self._samples.append(sample)
            if self._stop.wait(self.interval):
                return

    def sample_once(self) -> PerfSample | None:
        """Read the tree now; None when the root process is gone."""
        if not self._cpus:
            import psutil  # here, not at the top: a run's start-up imports this module

            self._cpus = psutil.cpu_count() or 1
            self._total_memory = psutil.virtual_memory().total or 1
        procs = self._tree()
        if not procs:
            return None
        cpu = 0.0
        rss = 0
        alive = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                alive += 1
            except _gone():
                self._procs.pop(proc.pid, None)
        return PerfSample(
            at=time.time(),
            node_id=self.node_id,
            cpu_percent=round(min(cpu / self._cpus, 100.0), 2),
            memory_percent=round(100.0 * rss / self._total_memory, 3),
            rss_bytes=rss,
            process_count=alive,
        )

    def _tree(self) -> list[psutil.Process]:
        import psutil

        root = self._procs.get(self.pid)
        try:
            if root is None:
                root = psutil.Process(self.pid)
            found = [root, *root.children(recursive=True)]
        except _gone():
            self._procs.clear()
            return []
        current: dict[int, psutil.Process] = {}
        for proc in found:
            # Reuse the cached object so cpu_percent has a previous reading to compare with.
            current[proc.pid] = self._procs.get(proc.pid, proc)
        self._procs = current
        return list(current.values())


def write_perf_csv(samples: Iterable[PerfSample], path: Path) -> Path:
    """Write samples as CSV (header + one row each), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for s in samples:
            stamp = datetime.fromtimestamp(s.at, UTC).isoformat(timespec="milliseconds")
            writer.writerow(
                [
                    stamp,
                    f"{s.at:.3f}",
                    s.node_id,
                    s.cpu_percent,
                    s.memory_percent,
                    s.rss_bytes,
                    s.process_count,
                ]
            )
    tmp.replace(path)
    return path


def read_perf_csv(path: Path) -> list[PerfSample]:
    """Read a file written by write_perf_csv (e.g. one per node, gathered for the report)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            PerfSample(
                at=float(row["epoch"]),
                node_id=row["node_id"],
                cpu_percent=float(row["cpu_percent"]),
                memory_percent=float(row["memory_percent"]),
                rss_bytes=int(row["rss_bytes"]),
                process_count=int(row["process_count"]),
            )
            for row in csv.DictReader(handle)
        ]
