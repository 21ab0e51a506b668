"""What a node reports after one try: the try's outcome as a BatchResult, secrets redacted."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from common.messages import BatchResult, Outcome
from common.redact import redact
from worker.run.pool import Task


def try_result(
    job_id: str,
    node_id: str,
    task: Task,
    outcome: dict[str, Any],
    process: str,
    reported: Outcome,
    secrets: Iterable[str],
) -> BatchResult:
    """The report of `task`'s try from its outcome (as a child or the node recorded it).

    A try that did not commit counts every item failed; a committed one what run() returned.
    """
    committed = outcome.get("status") == "committed"
    total = outcome.get("total", task.payload["total"])
    failed = outcome.get("failed", total) if committed else total
    error = outcome.get("error") or (task.payload.get("missing_error") if failed else None)
    started = outcome.get("started", task.received)
    return BatchResult(
        job_id=job_id,
        batch_id=task.batch_id,
        node_id=node_id,
        process=process,
        attempt=task.attempt,
        outcome=reported,
        total=total,
        succeeded=outcome.get("succeeded", 0) if committed else 0,
        failed=failed,
        started=started,
        download_seconds=task.download_seconds,
        run_seconds=outcome.get("run_seconds", 0.0),
        commit_seconds=outcome.get("commit_seconds", 0.0),
        seconds=task.download_seconds + time.time() - started,
        part=outcome.get("part"),
        error=redact(error, secrets) if error else None,
        error_type=outcome.get("error_type"),
        traceback=redact(outcome["traceback"], secrets) if outcome.get("traceback") else None,
    )
