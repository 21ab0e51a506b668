"""Render report.html for a job that ended, on a thread of the coordinator's own process.

The plots are plain SVG strings (coordinator.report.plots) drawn from the tries' digest, so a report for
any number of tries takes tens of milliseconds: no worker process, nothing to import ahead of time.
It renders while the coordinator waits on others (nodes saying goodbye, the broker deleting queues).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from common.messages import JobConfig
from common.perf import PerfSample
from coordinator.report.digest import TryDigest
from coordinator.report.html import render_report


class ReportRenderer:
    """One report: `request` hands over the job's data and starts rendering, `result` returns the HTML.

    A later `request` replaces an earlier one (the summary changed meanwhile)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._html: str | None = None
        self._error: BaseException | None = None

    def request(
        self, job: JobConfig, digest: TryDigest, summary: Mapping[str, Any], perf: Sequence[PerfSample]
    ) -> None:
        # Copies of the containers: the caller may keep appending to its own lists. The digest is
        # the job's own: requested once its tries are all in.
        self._join()
        self._html = self._error = None
        args = (job, digest, dict(summary), list(perf))
        self._thread = threading.Thread(target=self._render, args=args, name="bf-report", daemon=True)
        self._thread.start()

    def result(self, timeout: float | None = None) -> str:
        """The HTML of the latest request, once rendered; raises what rendering raised."""
        if self._thread is None:
            raise RuntimeError("ReportRenderer.result() called before request()")
        self._join(timeout)
        if self._error is not None:
            raise self._error
        if self._html is None:
            raise TimeoutError(f"the report was not rendered within {timeout} s")
        return self._html

    def close(self) -> None:
        """Forget the request (a rendering under way finishes on its own)."""
        self._thread = None
        self._html = self._error = None

    def _join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _render(self, job: JobConfig, digest: TryDigest, summary: dict[str, Any], perf: list[PerfSample]) -> None:
        try:
            self._html = render_report(job, digest, summary, perf)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc
