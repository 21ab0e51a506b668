"""The tally: fixed size per batch, first commit wins, every try streamed to the logs and the digest."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

from common.messages import BatchResult, Outcome
from common.parts.frames import PartRecord
from common.storage import StorageOptions
from coordinator.follow.partrefs import PartRefs
from coordinator.follow.tally import Tally
from coordinator.report.digest import TryDigest
from coordinator.report.state import error_groups
from coordinator.report.trylog import ATTEMPTS, PROCESSED, TryLog

T0 = 1_700_000_000.0
REPO = Path(__file__).resolve().parents[2]


def result(
    batch_id: int, outcome: Outcome = "committed", attempt: int = 1, node: str = "n1", **extra: object
) -> BatchResult:
    fields: dict[str, object] = dict(
        job_id="j", batch_id=batch_id, node_id=node, process="p0", attempt=attempt, outcome=outcome, total=10,
        succeeded=10 if outcome == "committed" else 0, failed=0 if outcome == "committed" else 10,
        started=T0 + batch_id * 0.001, seconds=0.004, download_seconds=0.001, run_seconds=0.002,
        commit_seconds=0.0005,
    )  # fmt: skip
    if outcome == "committed":
        fields["part"] = f"/store/j/parts/{node}/p0.{batch_id % 2}.seg#{batch_id * 700 + 30}+670"
    fields.update(extra)
    return BatchResult.model_construct(**fields)  # type: ignore[arg-type]


def watched(batches: int) -> tuple[Tally, TryDigest, TryLog]:
    tally = Tally(batches)
    digest, trylog = TryDigest(T0), TryLog(tally.tries_of)
    tally.watch(digest.add)
    tally.watch(trylog.add, trylog.reused)
    return tally, digest, trylog


def test_first_commit_wins_and_duplicates_count_once() -> None:
    tally, digest, trylog = watched(3)
    try:
        assert tally.apply(result(0, "retry", error="boom", error_type="ValueError")) is False
        assert tally.apply(result(0, attempt=2)) is True
        assert tally.apply(result(0, attempt=3, node="n2")) is False, "a redelivered batch committed twice"
        assert tally.apply(result(1, "failed", error="bad\nmore", error_type="OSError")) is True
        assert tally.apply(result(7)) is False, "not in the plan"
        assert tally.committed_count == 1 and tally.failed_count == 1 and tally.duplicates == 1
        assert list(tally.committed_ids()) == [0] and list(tally.failed_ids()) == [1]
        assert tally.tries_of(0) == 3 and tally.tries_of(1) == 1 and tally.tries_of(2) == 0
        assert tally.parts.get(0) == result(0, attempt=2).part, "the first commit's part, not the duplicate's"
        assert tally.items_succeeded == 10 and tally.items_failed == 10
        assert tally.errors.first() == (1, "bad\nmore")
        assert tally.failures[1].error_type == "OSError"
        assert not tally.finished and tally.done == 2
        assert digest.tries == 4 and digest.retries == 1
        assert [(g.error_type, g.message, g.tries) for g in digest.failure_groups()] == [
            ("OSError", "bad", 1),
            ("ValueError", "boom", 1),
        ]
    finally:
        trylog.discard()


def test_reused_parts_resolve_batches_without_a_try(tmp_path: Path) -> None:
    tally, digest, trylog = watched(3)
    found = PartRecord(batch_id=2, attempt=2, succeeded=4, failed=1, ref="/s/j/parts/n9/p.1.seg#10+20")
    assert tally.reuse(found, "n9") is True
    assert tally.reuse(found, "n9") is False
    assert tally.reused == 1 and tally.is_committed(2) and tally.parts.get(2) == found.ref
    assert tally.items_succeeded == 4 and tally.items_failed == 1 and digest.tries == 0
    tally.apply(result(0))
    trylog.place(str(tmp_path), StorageOptions(), {})
    processed = list(csv.DictReader((tmp_path / "sys" / "job_report" / PROCESSED).read_text().splitlines()))
    assert [(row["batch_id"], row["node"], row["tries"], row["status"]) for row in processed] == [
        ("0", "n1", "1", "succeeded"),
        ("2", "n9", "2", "partial"),
    ], "in batch order"
    attempts = list(csv.DictReader((tmp_path / "sys" / "job_report" / ATTEMPTS).read_text().splitlines()))
    assert [row["batch_id"] for row in attempts] == ["0"], "a reused part is no try of this run"


def test_the_logs_stream_every_try(tmp_path: Path) -> None:
    tally, _, trylog = watched(2)
    tally.apply(result(0, "retry", error='line one, "quoted"\nline two', error_type="ValueError"))
    tally.apply(result(0, attempt=2))
    tally.apply(result(1, "failed", attempt=3, error="gone", error_type="DeadLettered", node="broker"))
    trylog.place(str(tmp_path), StorageOptions(), {})
    report = tmp_path / "sys" / "job_report"
    attempts = list(csv.DictReader((report / ATTEMPTS).read_text().splitlines(keepends=True)))
    assert [(r["batch_id"], r["attempt"], r["outcome"]) for r in attempts] == [
        ("0", "1", "retry"), ("0", "2", "committed"), ("1", "3", "failed"),
    ]  # fmt: skip
    assert attempts[0]["error"] == 'line one, "quoted"\nline two'
    processed = list(csv.DictReader((report / PROCESSED).read_text().splitlines()))
    assert [(r["batch_id"], r["tries"], r["status"], r["error"]) for r in processed] == [
        ("0", "2", "succeeded", ""),
        ("1", "3", "failed", "gone"),
    ]
    assert processed[0]["start"].startswith(time.strftime("%Y-%m-%d", time.localtime(T0)))
    assert not trylog.folder.exists()


def test_status_error_groups_come_from_the_digest() -> None:
    tally, digest, trylog = watched(4)
    try:
        for batch in (1, 3):
            for attempt in (1, 2):
                tally.apply(result(batch, "retry", attempt, error=f"poison {batch}", error_type="ValueError",
                                   traceback="Traceback ...\nValueError"))  # fmt: skip
        groups = error_groups(digest)
        assert [(g["message"], g["count"], g["batch_ids"]) for g in groups] == [
            ("poison 1", 2, [1]),
            ("poison 3", 2, [3]),
        ]
        assert groups[0]["traceback"].startswith("Traceback")
    finally:
        trylog.discard()


def test_part_refs_are_compact_and_exact() -> None:
    refs = PartRefs(4)
    refs.set(0, "/a/parts/n1/p.1.seg#31+100")
    refs.set(1, "s3://b/area/parts/n1/000000001.2.part#33+7")
    refs.set(2, "s3://b/area/parts/n1/000000099.1.part#33+7")  # not its own name: kept whole
    refs.set(3, "/a/parts/n1/p.1.seg#131+0")
    assert refs.get(0) == "/a/parts/n1/p.1.seg#31+100"
    assert refs.span(1) == ("s3://b/area/parts/n1/000000001.2.part", 33, 7)
    assert refs.get(2) == "s3://b/area/parts/n1/000000099.1.part#33+7"
    assert refs.span(3) == ("/a/parts/n1/p.1.seg", 131, 0)
    assert PartRefs(1).span(0) is None


MILLION = """
import sys
from tests.unit.test_tally import peak_bytes, result, watched

count = 1_000_000
before = peak_bytes()
tally, digest, trylog = watched(count)
for batch in range(count):
    if batch % 100 == 0:
        tally.apply(result(batch, "retry", error=f"flaky {batch % 7}", error_type="IOError"))
    tally.apply(result(batch, attempt=1 + (batch % 100 == 0), node=f"n{batch % 4}"))
grown = peak_bytes() - before
trylog.discard()
assert tally.finished and tally.committed_count == count and digest.tries == count + count // 100
assert tally.parts.get(count - 1) == result(count - 1, node=f"n{(count - 1) % 4}").part
print(grown)
"""


def peak_bytes() -> int:
    """This process's peak resident memory so far."""
    if sys.platform == "win32":
        import psutil

        return int(psutil.Process().memory_info().peak_wset)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def test_a_million_tries_fit_in_under_100_mb() -> None:
    """The tally, the report's digest and the streamed logs for 1,000,000 tries (10,000 retried),
    in a fresh process: its peak memory grows by less than 100 MB."""
    done = subprocess.run(
        [sys.executable, "-c", MILLION], capture_output=True, text=True, timeout=600, check=False, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.split()[-1])
    assert grown < 100 * 2**20, f"peak memory grew by {grown / 2**20:.1f} MiB"


def test_a_busy_heartbeat_holds_off_a_stall_that_an_idle_sample_would_call() -> None:
    from common.policy import is_stalled

    tally = Tally(1)
    tally.last_progress = 0.0  # the job started long ago and nothing has resolved since
    tally.heartbeat("n1", 1)  # a child in init() (or running a batch) ...
    tally.heartbeat("n1", 0)  # ... and, a moment later, a sample between init() and the first batch
    now = tally.last_busy + 1.0
    assert tally.last_sign_of_work() == tally.last_busy > 0
    assert not is_stalled(now, tally.last_sign_of_work(), tally.busy(now, 10), 1.5)
    # idle for longer than the timeout since the last busy word: a stall
    assert is_stalled(now + 1.0, tally.last_sign_of_work(), tally.busy(now + 1.0, 10), 1.5)
    tally.heartbeat("n1", 1)  # the latest word says busy: no stall, however old the last result
    later = tally.last_busy + 5.0
    assert not is_stalled(later, tally.last_progress, tally.busy(later, 10), 1.5)
