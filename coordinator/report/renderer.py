"""Render report.html for a job that ended, in the coordinator's own process.

The plots are plain SVG strings (coordinator.report.plots) drawn from the tries' digest, so a report for
any number of tries takes tens of milliseconds: no worker process, nothing to import ahead of time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from common.messages import JobConfig
from common.perf import PerfSample
from coordinator.report.digest import TryDigest
from coordinator.report.html import render_report


class ReportRenderer:
    """One report: `request` hands over the job's data, `result` renders and returns the HTML."""

    def __init__(self) -> None:
        self._request: tuple[JobConfig, TryDigest, dict[str, Any], list[PerfSample]] | None = None

    def request(
        self, job: JobConfig, digest: TryDigest, summary: Mapping[str, Any], perf: Sequence[PerfSample]
    ) -> None:
        # Copies of the containers: the caller may keep appending to its own lists. The digest is
        # the job's own: requested once its tries are all in.
        self._request = (job, digest, dict(summary), list(perf))

    def result(self, timeout: float | None = None) -> str:
        """The HTML of the requested report. `timeout` is accepted for compatibility; rendering is inline."""
        if self._request is None:
            raise RuntimeError("ReportRenderer.result() called before request()")
        return render_report(*self._request)

    def close(self) -> None:
        """Forget the request; nothing else to release."""
        self._request = None
