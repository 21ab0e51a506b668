"""The merged output is written while the job runs, in batch order; lines that come early wait in a
bounded window (spilled to disk), and remote parts are fetched ahead into one."""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path

import pytest

from common.messages import BatchResult
from common.parts.frames import PartReader, header, make_ref
from common.storage import StorageOptions, StoreUnreachable, open_storage
from coordinator import merger as merging
from coordinator.follow.tally import Tally
from coordinator.merger import RemoteWindow, StreamMerger
from coordinator.report.reorder import ReorderWindow
from tests.runtime_helpers import make_job
from worker.commit.parts import PartWriter


@pytest.mark.parametrize("memory", [1_000_000, 50, 1])
def test_reorder_window_writes_in_order(tmp_path: Path, memory: int) -> None:
    order = list(range(1000))
    random.Random(7).shuffle(order)
    out = io.BytesIO()
    window = ReorderWindow(out, tmp_path, memory=memory)
    written = []
    for count, index in enumerate(order, 1):
        window.add(index, b"%d\n" % index)
        written.append(out.getvalue().count(b"\n"))
        assert written[-1] == window.next, "everything up to the first gap is out"
        assert count >= window.next
    window.close()
    assert out.getvalue().split() == [b"%d" % i for i in range(1000)]
    assert not list(tmp_path.iterdir()), "spilled runs are removed"


def test_reorder_window_close_keeps_order_across_gaps(tmp_path: Path) -> None:
    out = io.BytesIO()
    window = ReorderWindow(out, tmp_path, memory=3)
    for index in (9, 2, 7, 0, 5, 8, 4):
        window.add(index, b"%d\n" % index)
    assert out.getvalue() == b"0\n"
    window.close()
    assert out.getvalue().split() == [b"0", b"2", b"4", b"5", b"7", b"8", b"9"]


def commit(batch: int, part: str, outcome: str = "committed") -> BatchResult:
    return BatchResult(job_id="job-1", batch_id=batch, node_id="n1", attempt=1, outcome=outcome,  # type: ignore[arg-type]
                       total=1, succeeded=1 if outcome == "committed" else 0, part=part or None)  # fmt: skip


def parts_for(tmp_path: Path, count: int) -> dict[int, str]:
    store = open_storage(str(tmp_path), StorageOptions())
    writer = PartWriter(store, str(tmp_path / "store" / "job-1" / "parts" / "n1"), "p")
    refs = {b: writer.commit(b, 1, 1, 0, b"row %d\n" % b) for b in range(count)}
    writer.close()
    return refs


def test_parts_are_merged_while_the_job_runs(tmp_path: Path) -> None:
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data")
    refs = parts_for(tmp_path, 6)
    tally = Tally(6)
    merger = StreamMerger(job, tally, StorageOptions()).start()
    for batch in (1, 0, 3):
        tally.apply(commit(batch, refs[batch]))
    tally.apply(commit(2, "", outcome="failed"))
    temp = tmp_path / "out" / ".parallel_run_step.txt.tmp"
    assert wait(lambda: merger.cursor == 4)
    assert temp.read_bytes() == b"row 0\nrow 1\nrow 3\n", "written before the job ends"
    for batch in (5, 4):
        tally.apply(commit(batch, refs[batch]))
    assert merger.finish(keep=True) == (str(tmp_path / "out" / "parallel_run_step.txt"), 5)
    assert (tmp_path / "out" / "parallel_run_step.txt").read_bytes() == b"row 0\nrow 1\nrow 3\nrow 4\nrow 5\n"
    assert not temp.exists()


def test_a_job_that_fails_leaves_no_merged_file(tmp_path: Path) -> None:
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data")
    refs = parts_for(tmp_path, 2)
    tally = Tally(2)
    merger = StreamMerger(job, tally, StorageOptions()).start()
    tally.apply(commit(0, refs[0]))
    assert merger.finish(keep=False) is None
    assert merger.finish(keep=True) is None, "finished once"
    assert not list((tmp_path / "out").iterdir())


def test_a_merge_error_surfaces_when_the_job_ends(tmp_path: Path) -> None:
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", append_row_format="csv")
    refs = parts_for(tmp_path, 1)  # text rows, not the Parquet bytes a csv part holds
    tally = Tally(1)
    merger = StreamMerger(job, tally, StorageOptions()).start()
    tally.apply(commit(0, refs[0]))
    with pytest.raises(Exception, match="batch 0: its part is not readable Parquet"):
        merger.finish(keep=True)
    assert not list((tmp_path / "out").iterdir())


class SlowReader:
    """Reads spans from a dict, each after a gate opens (a far-away store)."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data
        self.gate = threading.Event()
        self.reads = 0

    def read_span(self, uri: str, offset: int, length: int) -> bytes:
        self.gate.wait(10)
        self.reads += 1
        return self.data[uri][offset : offset + length]

    def close(self) -> None:
        pass

    read_frame = PartReader.read_frame  # the merger reads each part with its frame header, through read_span


def test_remote_parts_are_fetched_ahead_and_spilled_past_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(merging, "WINDOW_BYTES", 10)
    rows = {i: b"rows of %d\n" % i for i in range(6)}
    reader = SlowReader({f"s3://b/{i:09d}.1.part": header(i, 1, 1, 0, rows[i]) + rows[i] for i in range(6)})
    window = RemoteWindow(reader, tmp_path)  # type: ignore[arg-type]
    for batch in range(1, 6):
        window.fetch(batch, f"s3://b/{batch:09d}.1.part", len(header(batch, 1, 1, 0, rows[batch])), len(rows[batch]))
    assert len(window) == 5 and 3 in window
    reader.gate.set()
    assert wait(lambda: reader.reads == 5)
    window.settle()
    assert (tmp_path / "spill.bin").stat().st_size > 0, "what did not fit in memory went to disk"
    assert [window.take(b) for b in range(1, 6)] == [b"rows of %d\n" % b for b in range(1, 6)]
    window.close()


def wait(predicate, timeout: float = 10) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


class Outage:
    """Wraps a reader's read_span: the store does not answer `failures` reads in a row."""

    def __init__(self, read_span, failures: int) -> None:  # type: ignore[no-untyped-def]
        self.read_span, self.failures, self.refused = read_span, failures, 0

    def __call__(self, uri: str, offset: int, length: int) -> bytes:
        if self.refused < self.failures:
            self.refused += 1
            raise StoreUnreachable(f"cannot reach the store for {uri}")
        return self.read_span(uri, offset, length)  # type: ignore[no-any-return]


def test_a_store_outage_during_the_merge_is_waited_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merging, "BACKOFF_MAX", 0.05)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data")
    refs = parts_for(tmp_path, 4)
    tally = Tally(4)
    merger = StreamMerger(job, tally, StorageOptions())
    outage = merger._reader.read_span = Outage(merger._reader.read_span, failures=5)  # type: ignore[method-assign]
    merger.start()
    tally.apply(commit(0, refs[0]))
    assert wait(lambda: merger.cursor == 1), "the merge went on once the store answered"
    assert outage.refused == 5
    outage.failures += 3  # down again when the job ends: finish() waits it out too
    for batch in (2, 1, 3):
        tally.apply(commit(batch, refs[batch]))
    merger.finish(keep=True)
    assert (tmp_path / "out" / "parallel_run_step.txt").read_bytes() == b"row 0\nrow 1\nrow 2\nrow 3\n"


def test_a_store_outage_longer_than_the_patience_fails_the_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(merging, "OUTAGE_PATIENCE", 0.3)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data")
    refs = parts_for(tmp_path, 1)
    tally = Tally(1)
    merger = StreamMerger(job, tally, StorageOptions())
    merger._reader.read_span = Outage(merger._reader.read_span, failures=10**6)  # type: ignore[method-assign]
    tally.apply(commit(0, refs[0]))
    with pytest.raises(StoreUnreachable, match="cannot reach the store"):
        merger.finish(keep=True)
    assert not list((tmp_path / "out").iterdir())


def framed(batch: int, rows: bytes) -> tuple[bytes, int, int]:
    """A part object holding `rows` as batch `batch`'s frame: (its bytes, the rows' offset, their length)."""
    head = header(batch, 1, 1, 0, rows)
    return head + rows, len(head), len(rows)


def test_fetches_the_store_did_not_answer_are_dropped_and_fetched_again(tmp_path: Path) -> None:
    parts = {i: framed(i, b"rows of %d\n" % i) for i in range(3)}
    reader = SlowReader({f"s3://b/{i}.part": parts[i][0] for i in range(3)})
    reader.gate.set()
    reader.read_span = Outage(reader.read_span, failures=2)  # type: ignore[method-assign]
    window = RemoteWindow(reader, tmp_path)  # type: ignore[arg-type]
    for batch in range(3):
        window.fetch(batch, f"s3://b/{batch}.part", *parts[batch][1:])
    assert wait(lambda: reader.reads == 1)
    assert wait(lambda: all(f.done() for f in window._pending.values()))
    with pytest.raises(StoreUnreachable):
        window.settle()
    assert len(window) == 1, "the two refused fetches left the window, raised once"
    for batch in range(3):
        if batch not in window:
            window.fetch(batch, f"s3://b/{batch}.part", *parts[batch][1:])
    assert [window.take(b) for b in range(3)] == [b"rows of %d\n" % b for b in range(3)]
    window.close()


def test_while_the_store_is_down_the_merge_probes_it_with_one_fetch(tmp_path: Path) -> None:
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data")
    job = job.model_copy(update={"store_uri": "s3://b/store/job-1"})  # parts are read only from the job's area
    uris = {b: f"s3://b/store/job-1/parts/n1/{b:09d}.1.part" for b in range(4)}
    parts = {b: framed(b, b"row %d\n" % b) for b in range(4)}
    reader = SlowReader({uris[b]: parts[b][0] for b in range(4)})
    reader.gate.set()
    outage = reader.read_span = Outage(reader.read_span, failures=10**6)  # type: ignore[method-assign]
    tally = Tally(4)
    merger = StreamMerger(job, tally, StorageOptions())
    merger._remote.close()  # type: ignore[union-attr]
    merger._reader, merger._remote = reader, RemoteWindow(reader, tmp_path)  # type: ignore[assignment]

    def step() -> None:
        assert wait(lambda: all(f.done() for f in merger._remote._pending.values()))  # type: ignore[union-attr]
        try:
            merger.advance()
        except StoreUnreachable as exc:
            merger._note_outage(exc, 0.5)

    for batch in (1, 2, 3):  # batch 0 holds the merge up: the rest is fetched ahead
        tally.apply(commit(batch, make_ref(uris[batch], *parts[batch][1:])))
    step()
    assert len(merger._remote) == 3  # type: ignore[arg-type]
    step()  # the store is down: the three fetches are dropped
    assert merger._outage is not None and len(merger._remote) == 0  # type: ignore[arg-type]
    for _ in range(3):
        step()
        assert len(merger._remote) <= 1, "one probe at a time"  # type: ignore[arg-type]
        assert merger._outage is not None, "no read answered: still down"
    outage.failures = 0  # the store is back: the next probe answers
    for _ in range(3):
        step()
    assert merger._outage is None
    tally.apply(commit(0, make_ref(uris[0], *parts[0][1:])))
    assert merger.finish(keep=True) == (str(tmp_path / "out" / "parallel_run_step.txt"), 4)
    assert (tmp_path / "out" / "parallel_run_step.txt").read_bytes() == b"row 0\nrow 1\nrow 2\nrow 3\n"
