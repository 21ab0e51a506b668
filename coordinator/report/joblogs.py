"""The Azure ML log layout: job_result.txt and the progress overview (the CSVs: report/trylog.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from common.jobarea import JobArea
from common.messages import JobConfig
from common.rejections import describe
from common.storage import join_uri
from coordinator.follow.tally import Tally


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
    output: str | None = None  # the merged file, once merged
    rows: int | None = None
    output_uri: str = ""  # the job's output location (logs/ is under it)
    output_action: str = "append_row"
    parts_uri: str = ""  # committed results in the job area, kept when nothing is merged
    prepared: dict[str, str] = field(default_factory=dict)  # node -> what getting ready cost it
    unsigned: bool = False  # a fleet run without a signing key (--insecure)
    rejected: dict[str, int] = field(default_factory=dict)  # untrusted messages dropped, by kind
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def batches_never_ran(self) -> int:
        """Mini-batches neither committed nor failed: the job ended (aborted, cancelled) first."""
        return max(self.batches_total - self.batches_committed - self.batches_failed, 0)

    @property
    def job_result_uri(self) -> str:
        return join_uri(self.output_uri, "logs", "job_result.txt") if self.output_uri else ""

    def as_dict(self) -> dict[str, object]:
        fields = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return fields | {"batches_never_ran": self.batches_never_ran, "merged": merged_text(self)} | self.extra


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
        batches_committed=tally.committed_count,
        batches_failed=tally.failed_count,
        items_total=items_total,
        items_succeeded=tally.items_succeeded,
        items_failed=tally.items_failed,
        reused=tally.reused,
        duplicates=tally.duplicates,
        batches_short=tally.short_count,
        output_uri=job.output_uri,
        output_action=job.settings.output_action,
        parts_uri=JobArea(job.store_uri).parts,
        prepared={node: seen.prepared for node, seen in tally.nodes.items() if seen.prepared},
    )


def merged_text(summary: Summary) -> str:
    """What the output holds: the merged file and its rows, or that nothing was merged and why."""
    if summary.output:
        return f"{summary.rows} rows merged into {summary.output}"
    if summary.output_action == "summary_only":
        return "nothing merged: output_action is summary_only (run() results are counted, not kept)"
    if summary.state == "succeeded":
        return "nothing merged"
    kept = (
        f"; the {summary.batches_committed} committed mini-batches are kept in {summary.parts_uri} "
        f"(`batchfleet resume {summary.job_id}` runs the rest and merges)"
        if summary.batches_committed
        else ""
    )
    return f"nothing merged: the job {summary.state}{kept}"


def batches_text(summary: Summary) -> str:
    """Mini-batches by outcome; the ones that never ran are named, not hidden in the total."""
    never = f", {summary.batches_never_ran} never ran" if summary.batches_never_ran else ""
    done = f"{summary.batches_committed}/{summary.batches_total} mini-batches committed"
    return f"{done}, {summary.batches_failed} failed{never}"


def items_text(summary: Summary) -> str:
    text = f"{summary.items_succeeded} items succeeded, {summary.items_failed} failed"
    unrun = summary.items_total - summary.items_succeeded - summary.items_failed
    if summary.batches_never_ran and unrun > 0:
        text += f", {unrun} not run"
    return text


def final_line(summary: Summary) -> str:
    """The one line `run`, `resume` and `follow` print when a job ends."""
    if summary.output:
        where = f"output {summary.output} ({summary.rows} rows)"
    else:
        where = merged_text(summary).split(":", 1)[0].split(";", 1)[0]  # "nothing merged"
        where += f" (see {summary.job_result_uri})" if summary.job_result_uri else ""
    return f"job {summary.job_id} {summary.state}: {batches_text(summary)}; {items_text(summary)}; {where}"


def job_result_text(job: JobConfig, summary: Summary) -> str:
    took = summary.finished - summary.started
    reused = f" ({summary.reused} reused from an earlier run)" if summary.reused else ""
    never = f"; {summary.batches_never_ran} never ran (the job ended first)" if summary.batches_never_ran else ""
    lines = [
        f"Job {summary.job_id} {summary.state}.",
        f"Reason: {summary.reason}" if summary.reason else "",
        f"Mini-batches: {summary.batches_committed} committed, {summary.batches_failed} failed"
        f"{never}; {summary.batches_total} in total{reused}.",
        f"Short returns: {summary.batches_short} mini-batches returned fewer results than items "
        "(their rows are kept; they count as failed mini-batches)."
        if summary.batches_short
        else "",
        f"Items: {items_text(summary)}; {summary.items_total} planned.",
        f"Duration: {took:.1f}s.",
        f"Output: {merged_text(summary)}.",
        f"Logs: {join_uri(summary.output_uri or job.output_uri, 'logs')}",
        "Security: UNSIGNED (--insecure): broker messages were believed without proof." if summary.unsigned else "",
        f"Dropped as untrusted: {describe(summary.rejected)}." if summary.rejected else "",
        f"Settings: {job.settings.model_dump_json(exclude_none=True)}",
        *environment_lines(job),
        *(f"Node {node}: {prepared}" for node, prepared in sorted(summary.prepared.items()) if prepared),
    ]
    return "\n".join(line for line in lines if line) + "\n"


def environment_lines(job: JobConfig) -> list[str]:
    """Which Python the children ran, and what of the spec's environment no worker provides."""
    env = job.python_env
    if env is None:
        return []
    if job.settings.environment == "job" and env.requirements:
        head = f"Environment: built on each node from {env.source} ({len(env.requirements)} pip requirements)."
    else:
        head = "Environment: the workers' own Python (--environment current)."
    return [head, *(f"Environment note: {note}" for note in env.notes())]


def progress_line(tally: Tally, started: float) -> str:
    elapsed = max(time.time() - started, 1e-6)
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} {tally.done}/{tally.batches_total} mini-batches processed "
        f"({tally.failed_count} failed), {tally.items_succeeded + tally.items_failed} items, "
        f"{(tally.items_succeeded + tally.items_failed) / elapsed:.1f} items/s"
    )
