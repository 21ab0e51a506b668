"""Write a finished job's logs and state where its users look for them."""

from __future__ import annotations

import json
import logging
import time

from common.messages import JobConfig
from common.storage import StorageOptions, join_uri, open_storage
from coordinator.joblogs import Summary, attempts_csv, job_result_text, processed_batches_csv
from coordinator.tally import Tally

log = logging.getLogger(__name__)


def write_state(job: JobConfig, state: dict[str, object], options: StorageOptions) -> None:
    """The job's state record in the store, read by `batchfleet status`."""
    storage = open_storage(job.store_uri, options)
    storage.write_bytes(join_uri(job.store_uri, "state.json"), json.dumps(state, indent=2).encode())


def write_job_logs(job: JobConfig, tally: Tally, summary: Summary, overview: list[str], options: StorageOptions) -> None:
    """logs/ under the output location, in the Azure ML layout, plus the HTML report."""
    logs = join_uri(job.output_uri, "logs")
    out = open_storage(logs, options)
    stamp = time.strftime("%Y%m%d%H", time.localtime(summary.started))
    out.write_bytes(join_uri(logs, "job_result.txt"), job_result_text(job, summary).encode())
    out.write_bytes(join_uri(logs, f"job_progress_overview.{stamp}.txt"), ("\n".join(overview) + "\n").encode())
    report_dir = join_uri(logs, "sys", "job_report")
    out.write_bytes(join_uri(report_dir, "processed_mini-batches.csv"), processed_batches_csv(tally))
    out.write_bytes(join_uri(report_dir, "attempts.csv"), attempts_csv(tally))
    write_html(job, tally, summary, options)
    write_state(job, summary.as_dict(), options)


def write_html(job: JobConfig, tally: Tally, summary: Summary, options: StorageOptions) -> None:
    try:
        from coordinator.report_html import render_report
    except ImportError:  # pragma: no cover - the report module ships with the package
        return
    html = render_report(job, tally.records, summary.as_dict(), [])
    uri = join_uri(job.output_uri, "logs", "report.html")
    open_storage(uri, options).write_bytes(uri, html.encode("utf-8"))
