"""What a node does as it leaves a job: its logs, perf samples and staged outputs reach the job's
output location, then the job's work folder goes (abandoned downloads with it). The code,
environment and side-input caches stay for the next job."""

from __future__ import annotations

import logging

from common.errors import BatchfleetError
from common.perf import write_perf_csv
from common.storage import StorageOptions, join_uri
from worker.commit.outputs import upload_tree
from worker.download.snapshot import remove_tree
from worker.intake.runtime import JobRuntime

log = logging.getLogger(__name__)


def leave_job(runtime: JobRuntime, node_id: str, options: StorageOptions, keep_work: bool) -> None:
    flush_logs(runtime, node_id, options)
    if not keep_work and runtime.layout.root.exists():
        remove_tree(runtime.layout.root)
        log.debug("removed %s", runtime.layout.root)


def flush_logs(runtime: JobRuntime, node_id: str, options: StorageOptions) -> None:
    """Per-node perf CSV, and staged logs and outputs, to the job's output location."""
    layout, job = runtime.layout, runtime.job
    try:
        if runtime.sampler is not None:
            samples = runtime.sampler.stop()
            if samples:
                write_perf_csv(samples, layout.log_root / "sys" / "perf" / node_id / "node_resource_usage.csv")
        if runtime.outputs is not None:
            runtime.outputs.push()
        if not layout.logs_are_local:
            upload_tree(layout.log_root, join_uri(job.output_uri, "logs"), options)
    except BatchfleetError as exc:
        log.warning("could not upload logs of job %s: %s", job.job_id, exc.line())
