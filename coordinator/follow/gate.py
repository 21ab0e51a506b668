"""What the follower believes of a reports-queue message: sealed by a node holding the fleet's key,
for this job, about a batch of its plan, and committed only into the job's own area.

Anything else is dropped (the caller acks it away), counted by kind, and its first logged with
the node it claims to come from; it never charges a try or ends the job.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from common.jobarea import JobArea
from common.messages import BatchResult, JobConfig, JobEvent, decode_report, unbundle_reports
from common.parts.frames import parse_ref
from common.redact import redact
from common.rejections import Rejections
from common.signing import SignatureError, open_report, unsealed
from common.storage import uri_within

log = logging.getLogger(__name__)

Report = BatchResult | JobEvent


class ReportGate:
    """Opens reports-queue messages of one job."""

    def __init__(
        self,
        job: JobConfig,
        key: bytes | None,
        batches_total: int,
        rejections: Rejections,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.job = job
        self.key = key
        self.secrets = secrets  # masked in error texts, which end up in the job's files
        self.batches_total = batches_total
        self.rejections = rejections
        self.parts_root = JobArea(job.store_uri).parts
        self._checked: dict[str, bool] = {}  # part file -> inside the area (local segments are few, and reused)

    def reports(self, message: bytes) -> list[Report]:
        """The trustworthy reports in one message (a lone report, an event or a bundle)."""
        if self.key is None:
            body = unsealed(message)  # without a key nothing can be checked: believe it (--insecure)
        else:
            try:
                body = open_report(self.key, self.job.job_id, message)
            except SignatureError as exc:
                self.rejections.drop(f"{exc.reason} report", _claimed_sender(message), exc.line())
                return []
        out: list[Report] = []
        for part in unbundle_reports(body):
            report = self._decode(part)
            if report is not None and self._believable(report):
                out.append(self._masked(report))
        return out

    def _masked(self, report: Report) -> Report:
        """Error texts with known secrets (and anything shaped like one) masked: they are written to
        attempts.csv, job_result.txt, state.json and report.html."""
        if isinstance(report, JobEvent):
            if report.kind in ("init_failed", "refused") and report.detail:
                return report.model_copy(update={"detail": redact(report.detail, self.secrets)})
            return report
        if not (report.error or report.traceback):
            return report
        update = {
            name: redact(value, self.secrets)
            for name, value in (("error", report.error), ("traceback", report.traceback))
            if value
        }
        return report.model_copy(update=update)

    def _decode(self, part: bytes) -> Report | None:
        try:
            return decode_report(part)
        except (ValidationError, ValueError) as exc:
            self.rejections.drop("unreadable report", "a node", _first_error(exc))
            return None

    def _believable(self, report: Report) -> bool:
        node = f"node {report.node_id}"
        if report.job_id != self.job.job_id:
            self.rejections.drop("report for another job", node, f"it names job {report.job_id}")
            return False
        if isinstance(report, JobEvent):
            return True
        if not 0 <= report.batch_id < self.batches_total:
            detail = f"batch {report.batch_id}; the plan has {self.batches_total}"
            self.rejections.drop("report on a batch not in the plan", node, detail)
            return False
        if report.outcome == "committed" and not self.owns_part(report.part):
            self.rejections.drop("report of a part outside the job area", node, f"batch {report.batch_id}")
            return False
        return True

    def owns_part(self, ref: str | None) -> bool:
        """A committed try's part must be a frame in the job's own parts/ folder."""
        if ref is None:
            return False
        try:
            uri, offset, length = parse_ref(ref)
        except ValueError:
            return False
        if offset < 0 or length < 0:
            return False
        inside = self._checked.get(uri)
        if inside is None:
            inside = part_file_in_area(uri, self.parts_root)
            if len(self._checked) < 100_000:
                self._checked[uri] = inside
        return inside


def part_file_in_area(uri: str, parts_root: str) -> bool:
    """True when a part file lies below `parts_root` (the job area's parts/ folder)."""
    return uri != parts_root and uri_within(uri, parts_root)


def _claimed_sender(message: bytes) -> str:
    """The node a dropped message says it is from (unverified: for the log only)."""
    for part in unbundle_reports(unsealed(message))[:1]:
        try:
            return f"a sender claiming to be node {decode_report(part).node_id}"
        except (ValidationError, ValueError):
            break
    return "an unknown sender"


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
    return str(exc)
