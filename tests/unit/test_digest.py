"""The report's digest: fixed size at any number of tries, exact while the job is small."""

from __future__ import annotations

import statistics

import pytest

from common.messages import BatchResult, Outcome
from coordinator.report import digest as digests
from coordinator.report.digest import Reservoir, Throughput, TryDigest

T0 = 1_700_000_000.0


def try_(batch: int, start: float, seconds: float, outcome: Outcome = "committed", **extra: object) -> BatchResult:
    fields: dict[str, object] = {"job_id": "j", "batch_id": batch, "node_id": "n", "process": "p", "attempt": 1,
                                 "outcome": outcome, "total": 2, "succeeded": 2 if outcome == "committed" else 0,
                                 "started": start, "seconds": seconds}  # fmt: skip
    fields.update(extra)
    return BatchResult.model_construct(**fields)  # type: ignore[arg-type]


def test_reservoir_keeps_everything_until_full_then_a_uniform_sample() -> None:
    small = Reservoir[int](100)
    for i in range(60):
        small.add(i)
    assert small.items == list(range(60)) and small.scale == 1.0
    big = Reservoir[int](1000, seed=3)
    for i in range(100_000):
        big.add(i)
    assert len(big.items) == 1000 and len(set(big.items)) == 1000 and big.scale == 100.0
    assert abs(statistics.mean(big.items) - 50_000) < 3_000, "uniform over everything seen"
    assert sum(i >= 90_000 for i in big.items) == pytest.approx(100, abs=40), "late items are kept too"


def test_throughput_bins_widen_and_lose_nothing() -> None:
    flow = Throughput()
    ends = [0.001 * i for i in range(1000)] + [36_000.0 + i for i in range(100)]  # a second, then ten hours on
    for end in ends:
        flow.add(end, True, 3)
    flow.add(5.0, False, 0)
    flow.add(-1.0, True, 3)  # before the job's start: not drawn
    assert flow.width > digests.FIRST_BIN and flow.last_end == 36_099.0
    items, good, bad = flow.rebinned(600.0, 61)
    assert sum(good) == 1100 and sum(items) == 3300 and sum(bad) == 1
    assert good[0] == 1000 and bad[0] == 1
    assert good[59] + good[60] == 100, "a fine bin goes where its middle falls: at most one bin off"


def test_error_groups_and_batch_ids_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "GROUPS_KEPT", 3)
    monkeypatch.setattr(digests, "IDS_KEPT", 5)
    tries = TryDigest(T0)
    for batch in range(20):
        tries.add(try_(batch, T0 + batch, 1.0, "retry", error="same", error_type="E"))
    for kind in range(6):
        tries.add(try_(100 + kind, T0, 1.0, "failed", error=f"kind {kind}", error_type="K"))
    groups = tries.failure_groups()
    assert len(groups) == 3 and tries.more_groups_tries == 4
    same = groups[0]
    assert same.tries == 20 and len(same.batches) == 5 and same.batch_count == 20
    assert same.first.batch_id == 0, "the earliest try is the group's first"


def test_slowest_and_nodes() -> None:
    tries = TryDigest.of([try_(b, T0 + b, float(b % 13)) for b in range(100)], T0)
    assert [r.seconds for r in tries.slowest()][:3] == [12.0, 12.0, 12.0]
    assert len(tries.slowest()) == digests.SLOWEST
    assert tries.nodes["n"].tries == 100 and tries.nodes["n"].items == 200
    assert tries.lanes == {("n", "p")}
