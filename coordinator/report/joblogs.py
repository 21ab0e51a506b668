"""The Azure ML log layout: job_result.txt, progress overview, processed_mini-batches.csv."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field

from common.messages import BatchResult, JobConfig
from coordinator.follow.tally import Tally

BATCH_COLUMNS = [
    "batch_id",
    "tries",
    "node",
    "process",
    "start",
    "total",
    "succeeded",
    "failed",
    "seconds",
    "download_seconds",
    "run_seconds",
    "commit_seconds",
    "status",
    "error",
]


@dataclass
class Summary:
    """What a finished job reports."""

    job_id: str
    state: str
    reason: str | None
    started: float
    finished: float
    batches_total: int
    batches_committed: int
    batches_failed: int
    items_total: int
    items_succeeded: int
    items_failed: int
    reused: int = 0
    duplicates: int = 0
    batches_short: int = 0  # committed, but run() returned fewer results than items (counted as failed)
    output: str | None = None
    rows: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra


def summarize(
    job: JobConfig, tally: Tally, state: str, reason: str | None, started: float, items_total: int
) -> Summary:
    return Summary(
        job_id=job.job_id,
        state=state,
        reason=reason,
        started=started,
        finished=time.time(),
        batches_total=tally.batches_total,
        batches_committed=len(tally.committed),
        batches_failed=len(tally.failed),
        items_total=items_total,
        items_succeeded=tally.items_succeeded,
        items_failed=tally.items_failed,
        reused=tally.reused,
        duplicates=tally.duplicates,
        batches_short=len(tally.short),
    )


def _final_rows(tally: Tally) -> list[BatchResult]:
    final = {**tally.failed, **tally.committed}
    return [final[b] for b in sorted(final)]


def batch_row(tally: Tally, r: BatchResult) -> list[object]:
    """One processed_mini-batches.csv row: the try that decided the batch."""
    status = "failed" if r.outcome != "committed" else ("partial" if r.failed else "succeeded")
    return [
        r.batch_id,
        tally.tries.get(r.batch_id, r.attempt),
        r.node_id,
        r.process,
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started)) if r.started else "",
        r.total,
        r.succeeded,
        r.failed,
        f"{r.seconds:.3f}",
        f"{r.download_seconds:.3f}",
        f"{r.run_seconds:.3f}",
        f"{r.commit_seconds:.3f}",
        status,
        (r.error or "").splitlines()[0] if r.error else "",
    ]


def csv_bytes(rows: list[list[object]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def processed_batches_csv(tally: Tally) -> bytes:
    """One row per resolved batch, in batch order."""
    return csv_bytes([[*BATCH_COLUMNS], *(batch_row(tally, r) for r in _final_rows(tally))])


def attempts_csv(tally: Tally) -> bytes:
    """Every try, retries included, for debugging."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["batch_id", "attempt", "node", "process", "outcome", "seconds", "error"])
    for r in tally.records:
        writer.writerow([r.batch_id, r.attempt, r.node_id, r.process, r.outcome, f"{r.seconds:.3f}", r.error or ""])
    return out.getvalue().encode()


def job_result_text(job: JobConfig, summary: Summary) -> str:
    took = summary.finished - summary.started
    lines = [
        f"Job {summary.job_id} {summary.state}.",
        f"Reason: {summary.reason}" if summary.reason else "",
        f"Mini-batches: {summary.batches_committed} succeeded, {summary.batches_failed} failed, "
        f"{summary.batches_total} in total ({summary.reused} reused from an earlier run).",
        f"Short returns: {summary.batches_short} mini-batches returned fewer results than items "
        "(their rows are kept; they count as failed mini-batches)."
        if summary.batches_short
        else "",
        f"Items: {summary.items_succeeded} succeeded, {summary.items_failed} failed.",
        f"Duration: {took:.1f}s.",
        f"Output: {summary.output} ({summary.rows} rows)." if summary.output else "Output: summary_only.",
        f"Settings: {job.settings.model_dump_json(exclude_none=True)}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def progress_line(tally: Tally, started: float) -> str:
    elapsed = max(time.time() - started, 1e-6)
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} {tally.done}/{tally.batches_total} mini-batches processed "
        f"({len(tally.failed)} failed), {tally.items_succeeded + tally.items_failed} items, "
        f"{(tally.items_succeeded + tally.items_failed) / elapsed:.1f} items/s"
    )
