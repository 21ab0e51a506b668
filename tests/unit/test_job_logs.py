"""Azure ML's job logs: live progress overview and processed_mini-batches.csv, job_error.txt,
logs/sys/error/<node>/."""

from __future__ import annotations

import csv
from pathlib import Path

from common.messages import BatchResult
from common.storage import StorageOptions
from coordinator.follow.tally import Tally
from coordinator.report.digest import TryDigest
from coordinator.report.errorlogs import dropped_node_texts, job_error_text
from coordinator.report.live import LIVE_EVERY, LiveLogs, overview_name
from coordinator.report.trylog import TryLog
from tests.cli_helpers import batchfleet, make_component
from tests.runtime_helpers import make_job


def result(batch: int, outcome: str = "committed", node: str = "n1", **extra: object) -> BatchResult:
    fields = {"total": 2, "succeeded": 2} if outcome == "committed" else {"total": 2}
    return BatchResult.model_validate(
        {"job_id": "j", "batch_id": batch, "node_id": node, "process": "process001", "attempt": 1,
         "outcome": outcome, **fields, **extra}
    )  # fmt: skip


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def watched(batches: int) -> tuple[Tally, TryDigest, TryLog]:
    tally = Tally(batches)
    digest, trylog = TryDigest(), TryLog(tally.tries_of)
    tally.watch(digest.add)
    tally.watch(trylog.add, trylog.reused)
    return tally, digest, trylog


def test_live_logs_grow_while_the_job_runs(tmp_path: Path) -> None:
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data")
    overview = ["first line"]
    tally, _, trylog = watched(4)
    live = LiveLogs(job, 1_700_000_000.0, overview, StorageOptions(), trylog)
    tally.apply(result(2))
    tally.apply(result(0, "retry", error="boom"))
    live.update(tally, now=100.0)
    logs = tmp_path / "out" / "logs"
    report = logs / "sys" / "job_report" / "processed_mini-batches.csv"
    assert [r["batch_id"] for r in rows(report)] == ["2"]
    assert (logs / overview_name(1_700_000_000.0)).read_text() == "first line\n"
    tally.apply(result(0, "failed", error="boom"))
    tally.apply(result(1))
    tally.apply(result(1))  # a duplicate is not a row
    overview.append("second line")
    live.update(tally, now=100.0 + LIVE_EVERY / 2)  # too soon: nothing written
    assert len(rows(report)) == 1
    live.update(tally, now=100.0 + LIVE_EVERY)
    assert [(r["batch_id"], r["status"]) for r in rows(report)] == [
        ("2", "succeeded"),
        ("0", "failed"),
        ("1", "succeeded"),
    ]
    assert (logs / overview_name(1_700_000_000.0)).read_text() == "first line\nsecond line\n"
    trylog.place(str(logs), StorageOptions(), {})
    assert [r["batch_id"] for r in rows(report)] == ["0", "1", "2"], "in batch order once the job ends"


def test_job_error_groups_errors_and_names_dropped_nodes(tmp_path: Path) -> None:
    tally, digest, trylog = watched(5)
    tally.apply(result(0, "retry", error="ValueError: bad row", error_type="ValueError", traceback="Traceback: x"))
    tally.apply(result(0, "failed", error="ValueError: bad row", error_type="ValueError"))
    tally.apply(result(1, total=3, succeeded=2, failed=1))
    tally.drop("n2", "init() failed on node n2 3 times: OSError: no model\nTraceback (most recent call last)")
    text = job_error_text(tally, digest, "failed", "2 failed mini-batches exceed allowed_failed_count=1")
    assert text is not None
    assert text.startswith("Job failed. 2 failed mini-batches exceed allowed_failed_count=1\n")
    assert "Node n2 left the job: init() failed on node n2 3 times: OSError: no model" in text
    assert "1 mini-batches returned fewer results than items (1 items): 1" in text
    assert "2 x ValueError: ValueError: bad row" in text and "Traceback: x" in text
    trylog.place(str(tmp_path), StorageOptions(), dropped_node_texts(tally))
    files = {
        p.relative_to(tmp_path / "sys" / "error").as_posix(): p.read_text() for p in tmp_path.glob("sys/error/*/*")
    }
    assert set(files) == {"n1/process001.txt", "n2/init.txt"}
    assert files["n1/process001.txt"].count("batch 0 attempt 1") == 2
    assert "Traceback (most recent call last)" in files["n2/init.txt"]


def test_no_job_error_file_for_a_clean_job(tmp_path: Path) -> None:
    tally, digest, trylog = watched(1)
    tally.apply(result(0))
    assert job_error_text(tally, digest, "succeeded", None) is None
    assert dropped_node_texts(tally) == {}
    trylog.place(str(tmp_path), StorageOptions(), {})
    assert not (tmp_path / "sys" / "error").exists()


FAILING = """\
def run(mini_batch):
    if any(p.endswith("item001.txt") for p in mini_batch):
        raise RuntimeError("cannot score item001")
    return mini_batch
"""


def test_a_run_writes_job_error_and_sys_error(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "code", entry=FAILING, files=4)
    result_ = batchfleet(
        "run", spec, "--input", f"data={tmp_path / 'code' / 'data'}", "--output", f"scored={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress", "--mini_batch_size", "1", "--run_max_try", "1",
        "--process_count_per_node", "1",
    )  # fmt: skip
    assert result_.code == 0, result_.stderr
    logs = tmp_path / "out" / "logs"
    assert "1 x RuntimeError: RuntimeError: cannot score item001" in (logs / "job_error.txt").read_text()
    node_errors = list((logs / "sys" / "error").glob("*/process001.txt"))
    assert len(node_errors) == 1 and "cannot score item001" in node_errors[0].read_text()
    assert len(rows(logs / "sys" / "job_report" / "processed_mini-batches.csv")) == 4
