"""Write a finished job's logs and state where its users look for them."""

from __future__ import annotations

import logging

from common.messages import JobConfig
from common.perf import PerfSample, write_perf_csv
from common.storage import StorageOptions, is_remote, join_uri, open_storage
from coordinator.follow.tally import Tally
from coordinator.report.digest import TryDigest
from coordinator.report.errorlogs import dropped_node_texts, job_error_text
from coordinator.report.joblogs import Summary, job_result_text
from coordinator.report.live import overview_name
from coordinator.report.renderer import ReportRenderer
from coordinator.report.state import snapshot, write_snapshot
from coordinator.report.trylog import TryLog

log = logging.getLogger(__name__)


def write_job_logs(
    job: JobConfig,
    tally: Tally,
    digest: TryDigest,
    trylog: TryLog,
    summary: Summary,
    overview: list[str],
    options: StorageOptions,
) -> None:
    """logs/ under the output location, in the Azure ML layout (the HTML report is written apart)."""
    logs = join_uri(job.output_uri, "logs")
    out = open_storage(logs, options)
    out.write_bytes(join_uri(logs, "job_result.txt"), job_result_text(job, summary).encode())
    out.write_bytes(join_uri(logs, overview_name(summary.started)), ("\n".join(overview) + "\n").encode())
    trylog.place(logs, options, dropped_node_texts(tally))
    errors = job_error_text(tally, digest, summary.state, summary.reason)
    if errors is not None:
        out.write_bytes(join_uri(logs, "job_error.txt"), errors.encode())
    final = snapshot(job, tally, digest, summary.started, summary.state, summary.reason) | summary.as_dict()
    final["output"] = summary.output or job.output_uri  # the merged file, else the output location
    write_snapshot(job, final, options)


def write_perf(job: JobConfig, node_id: str, samples: list[PerfSample], options: StorageOptions) -> None:
    """logs/sys/perf/<node>/node_resource_usage.csv, like Azure ML's."""
    if not samples:
        return
    uri = join_uri(job.output_uri, "logs", "sys", "perf", node_id, "node_resource_usage.csv")
    if is_remote(uri):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            local = write_perf_csv(samples, Path(tmp) / "node_resource_usage.csv")
            open_storage(uri, options).upload(local, uri)
    else:
        from pathlib import Path

        write_perf_csv(samples, Path(uri))


def write_html(job: JobConfig, html: str, options: StorageOptions) -> str:
    uri = join_uri(job.output_uri, "logs", "report.html")
    open_storage(uri, options).write_bytes(uri, html.encode("utf-8"))
    return uri


__all__ = ["ReportRenderer", "write_html", "write_job_logs", "write_perf"]
