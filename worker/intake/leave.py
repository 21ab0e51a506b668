"""What a node does as it leaves a job: its logs, perf samples and staged outputs reach the job's
output location, then the job's work folder goes (abandoned downloads with it). The code,
environment and side-input caches stay for the next job."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from common.errors import BatchfleetError
from common.perf import write_perf_csv
from common.storage import StorageOptions, join_uri
from worker.commit.outputs import upload_tree
from worker.download.sideinputs import INPUT_CACHE
from worker.download.snapshot import CODE_CACHE, remove_tree
from worker.intake.runtime import JobRuntime
from worker.run.environment import ENV_CACHE

log = logging.getLogger(__name__)


def leave_job(
    runtime: JobRuntime,
    node_id: str,
    options: StorageOptions,
    keep_work: bool,
    secrets: Iterable[str] = (),
    session: str = "",
) -> None:
    flush_logs(runtime, node_id, options, secrets, session)
    if not keep_work and runtime.layout.root.exists():
        remove_tree(runtime.layout.root)
        log.debug("removed %s", runtime.layout.root)


def flush_logs(
    runtime: JobRuntime, node_id: str, options: StorageOptions, secrets: Iterable[str] = (), session: str = ""
) -> None:
    """Per-node perf CSV (one per node process: named with its session token), and staged logs (known
    secrets masked) and outputs, to the job's output location."""
    layout, job = runtime.layout, runtime.job
    name = f"node_resource_usage.{session}.csv" if session else "node_resource_usage.csv"
    try:
        if runtime.sampler is not None:
            samples = runtime.sampler.stop()
            if samples:
                write_perf_csv(samples, layout.log_root / "sys" / "perf" / node_id / name)
        if runtime.outputs is not None:
            runtime.outputs.push()
        if not layout.logs_are_local:
            upload_tree(layout.log_root, join_uri(job.output_uri, "logs"), options, secrets)
    except BatchfleetError as exc:
        log.warning("could not upload logs of job %s: %s", job.job_id, exc.line())


CACHE_DAYS = 7.0


def prune_caches(work_root: Path, in_use: Iterable[Path], max_age: float = CACHE_DAYS * 86400) -> list[Path]:
    """Remove code copies, environments and side inputs no job has used for `max_age` seconds
    (never one a job being served uses); return what was removed."""
    keep = {path.resolve() for path in in_use}
    cutoff = time.time() - max_age
    removed = []
    for cache in (CODE_CACHE, ENV_CACHE, INPUT_CACHE):
        folder = work_root / cache
        entries = [entry for entry in folder.iterdir() if entry.is_dir()] if folder.is_dir() else []
        for entry in entries:
            if entry.resolve() in keep or entry.stat().st_mtime > cutoff:  # a partial one too, once old
                continue
            remove_tree(entry)
            for beside in (f"{entry.name}.requirements.txt", f"{entry.name}.lock"):  # an environment's
                entry.with_name(beside).unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info("removed %d cache entries unused for %.0f days", len(removed), max_age / 86400)
    return removed
