"""Render report.html in a separate process started with the job.

Importing matplotlib and drawing the plots takes about a second of CPU; started early,
the import overlaps the job and the drawing overlaps the merge.
"""

from __future__ import annotations

import logging
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

from common.messages import BatchResult, JobConfig
from common.perf import PerfSample

log = logging.getLogger(__name__)


def _serve(conn: Connection) -> None:
    from coordinator.report_html import render_report

    try:
        request = conn.recv()
    except EOFError:
        return
    job = JobConfig.model_validate_json(request["job"])
    records = [BatchResult.model_validate(r) for r in request["records"]]
    perf = [PerfSample.model_validate(p) for p in request["perf"]]
    conn.send(render_report(job, records, request["summary"], perf))


class ReportRenderer:
    """One render, off the coordinator's process; falls back to rendering inline."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child,), name="batchfleet-report", daemon=True)
        self._process.start()
        child.close()
        self._request: dict[str, Any] | None = None

    def request(
        self, job: JobConfig, records: list[BatchResult], summary: dict[str, Any], perf: list[PerfSample]
    ) -> None:
        self._request = {
            "job": job.model_dump_json(),
            "records": [r.model_dump() for r in records],
            "summary": summary,
            "perf": [p.model_dump() for p in perf],
        }
        try:
            self._conn.send(self._request)
        except OSError as exc:
            log.warning("report process is gone (%s); rendering inline", exc)

    def result(self, timeout: float = 300.0) -> str:
        """The HTML; rendered here if the process failed."""
        try:
            if self._conn.poll(timeout):
                html = self._conn.recv()
                self._process.join(timeout=5)
                return str(html)
        except (EOFError, OSError) as exc:
            log.warning("report process failed (%s); rendering inline", exc)
        self.close()
        return self._inline()

    def _inline(self) -> str:
        from coordinator.report_html import render_report

        assert self._request is not None
        request = self._request
        return render_report(
            JobConfig.model_validate_json(request["job"]),
            [BatchResult.model_validate(r) for r in request["records"]],
            request["summary"],
            [PerfSample.model_validate(p) for p in request["perf"]],
        )

    def close(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)
        self._conn.close()
