"""PerfSampler: samples a process tree cheaply, on a thread, and writes node_resource_usage-style CSV."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.perf import CSV_FIELDS, PerfSample, PerfSampler, read_perf_csv, write_perf_csv

# Busy for a while, holding ~40 MB so the child's memory shows in the tree's RSS.
CHILD = """
import time
block = bytearray(40 * 1024 * 1024)
end = time.time() + 1.5
while time.time() < end:
    pass
"""


def test_samples_include_child_processes() -> None:
    alone = PerfSampler("node-1", interval=0.1).sample_once()
    assert alone is not None
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        sampler = PerfSampler("node-1", interval=0.1).start()
        time.sleep(1.0)
        samples = sampler.stop()
    finally:
        child.wait(timeout=30)
    assert len(samples) >= 4
    assert all(s.node_id == "node-1" for s in samples)
    assert [s.at for s in samples] == sorted(s.at for s in samples)
    assert max(s.process_count for s in samples) >= 2
    assert max(s.rss_bytes for s in samples) >= alone.rss_bytes + 30 * 1024**2
    # The child spins a core: after the first reading, the tree shows real CPU use.
    assert max(s.cpu_percent for s in samples[1:]) > 5
    assert all(0 <= s.cpu_percent <= 100 and s.memory_percent > 0 for s in samples)
    assert sampler.samples() == samples


def test_stop_is_prompt_and_sampling_is_cheap() -> None:
    sampler = PerfSampler("n", interval=30).start()
    began = time.perf_counter()
    samples = sampler.stop()
    # stop() must not wait out the interval, and one reading must not block for a cpu interval.
    assert time.perf_counter() - began < 1.0
    assert len(samples) == 1
    began = time.perf_counter()
    for _ in range(20):
        sampler.sample_once()
    assert (time.perf_counter() - began) / 20 < 0.05


def test_gone_process_yields_no_samples() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    sampler = PerfSampler("n", interval=0.05, pid=child.pid)
    assert sampler.sample_once() is None
    sampler.start()
    time.sleep(0.2)
    assert sampler.stop() == []


def test_memory_is_bounded() -> None:
    sampler = PerfSampler("n", interval=0.01, max_samples=3).start()
    time.sleep(0.3)
    assert len(sampler.stop()) == 3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        PerfSampler("n", interval=0)
    sampler = PerfSampler("n", interval=1).start()
    try:
        with pytest.raises(RuntimeError):
            sampler.start()
    finally:
        sampler.stop()
    with pytest.raises(ValidationError):
        PerfSample.model_validate(
            {"at": 1, "node_id": "n", "cpu_percent": 1, "memory_percent": 1, "rss_bytes": 1,
             "process_count": 1, "extra": 1}
        )  # fmt: skip


def test_csv_round_trip(tmp_path: Path) -> None:
    samples = [
        PerfSample(at=1_700_000_000.25 + i, node_id="node,a", cpu_percent=12.5 * i, memory_percent=0.5,
                   rss_bytes=1024 * (i + 1), process_count=i + 1)
        for i in range(3)
    ]  # fmt: skip
    path = write_perf_csv(samples, tmp_path / "logs" / "sys" / "perf" / "node_resource_usage.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_FIELDS
    assert len(rows) == 4
    assert rows[1][0] == "2023-11-14T22:13:20.250+00:00"
    assert rows[1][2] == "node,a"
    assert read_perf_csv(path) == samples
    assert not list(path.parent.glob("*.tmp"))


def test_empty_csv_has_header(tmp_path: Path) -> None:
    path = write_perf_csv([], tmp_path / "perf.csv")
    assert path.read_text(encoding="utf-8").splitlines() == [",".join(CSV_FIELDS)]
    assert read_perf_csv(path) == []
