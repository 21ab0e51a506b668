"""The job's state record (<job area>/state.json): what `status` and `list` read."""

from __future__ import annotations

import json
import time
from typing import Any

from common.jobarea import JobArea
from common.messages import JobConfig
from common.storage import StorageOptions, open_storage
from coordinator.follow.tally import Tally
from coordinator.report.digest import TryDigest


def error_groups(digest: TryDigest, limit: int = 20, failed_only: bool = True) -> list[dict[str, Any]]:
    """Failed tries grouped by (error type, first line), largest first, with the first traceback."""
    groups = [g for g in digest.failure_groups() if g.failed_tries or not failed_only]
    groups.sort(key=lambda g: -(g.failed_tries if failed_only else g.tries))
    return [
        {
            "error_type": group.error_type,
            "message": group.message,
            "count": group.failed_tries if failed_only else group.tries,
            "batch_ids": sorted(group.batches)[:50],
            "traceback": group.first.traceback or "",
        }
        for group in groups[:limit]
    ]


def snapshot(
    job: JobConfig, tally: Tally, digest: TryDigest, started: float, state: str, reason: str | None = None
) -> dict[str, Any]:
    """A JSON-able picture of the job now."""
    now = time.time()
    items = tally.items_succeeded + tally.items_failed
    elapsed = max(now - started, 1e-6)
    rate = items / elapsed
    batch_rate = max(tally.done - tally.reused, 0) / elapsed
    pending = tally.batches_total - tally.done
    return {
        "job_id": job.job_id,
        "name": job.name,
        "state": state,
        "reason": reason,
        "started": started,
        "updated": now,
        "batches_total": tally.batches_total,
        "batches_committed": tally.committed_count,
        "batches_failed": tally.failed_count,
        "batches_pending": pending,
        "reused": tally.reused,
        "items_succeeded": tally.items_succeeded,
        "items_failed": tally.items_failed,
        "items_per_second": round(rate, 2),
        "eta_seconds": round(pending / batch_rate, 1) if batch_rate else None,
        "output": job.output_uri,
        "nodes": {
            node_id: {
                "batches": n.batches,
                "failures": n.failures,
                "busy": n.busy,
                "last_seen": n.last_seen,
                "prepared": n.prepared,
            }
            for node_id, n in tally.nodes.items()
        },
        "error_groups": error_groups(digest),
    }


def write_snapshot(job: JobConfig, data: dict[str, Any], options: StorageOptions) -> None:
    storage = open_storage(job.store_uri, options)
    storage.write_bytes(JobArea(job.store_uri).state, json.dumps(data, indent=1).encode())


def read_state(store_uri: str, job_id: str, options: StorageOptions) -> dict[str, Any]:
    from common.errors import UsageError

    uri = JobArea.of(store_uri, job_id).state
    storage = open_storage(uri, options)
    if not storage.exists(uri):
        raise UsageError(f"no job {job_id} in store {store_uri}", "check the job id, --store or $BATCHFLEET_STORE")
    data: dict[str, Any] = json.loads(storage.read_bytes(uri))
    return data


def request_cancel(store_uri: str, job_id: str, options: StorageOptions) -> None:
    """Ask the job's coordinator to stop (it polls for this file)."""
    uri = JobArea.of(store_uri, job_id).cancel
    open_storage(uri, options).write_bytes(uri, json.dumps({"at": time.time()}).encode())


def cancel_requested(job: JobConfig, options: StorageOptions) -> bool:
    uri = JobArea(job.store_uri).cancel
    return open_storage(uri, options).exists(uri)
