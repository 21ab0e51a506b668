"""Logs Azure ML keeps current while a job runs: job_progress_overview.<hour>.txt and
logs/sys/job_report/processed_mini-batches.csv (in the order batches resolved; replaced by the
file in batch order once the job ends, see report/trylog.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from common.errors import BatchfleetError
from common.messages import JobConfig
from common.storage import StorageOptions, is_remote, join_uri, open_storage
from coordinator.follow.tally import Tally
from coordinator.report.trylog import PROCESSED, TryLog

log = logging.getLogger(__name__)

LIVE_EVERY = 10.0  # seconds between updates
REMOTE_ROWS_PER_SECOND = 5000  # a remote CSV is rewritten whole: big ones less often
COPY_CHUNK = 1 << 20


def overview_name(started: float) -> str:
    return f"job_progress_overview.{time.strftime('%Y%m%d%H', time.localtime(started))}.txt"


class LiveLogs:
    """Call update(tally) often; it writes every LIVE_EVERY seconds at most."""

    def __init__(
        self, job: JobConfig, started: float, overview: list[str], options: StorageOptions, trylog: TryLog
    ) -> None:
        self.logs = join_uri(job.output_uri, "logs")
        self.overview_uri = join_uri(self.logs, overview_name(started))
        self.csv_uri = join_uri(self.logs, "sys", "job_report", PROCESSED)
        self.overview = overview
        self.options = options
        self.trylog = trylog
        self.remote = is_remote(self.logs)
        self._last = 0.0
        self._copied = 0  # bytes of the trylog's resolved rows already in a local live CSV

    def update(self, tally: Tally, now: float | None = None) -> None:
        now = time.time() if now is None else now
        wait = LIVE_EVERY
        if self.remote:
            wait = max(wait, tally.done / REMOTE_ROWS_PER_SECOND)
        if now - self._last < wait:
            return
        self._last = now
        try:
            storage = open_storage(self.logs, self.options)
            storage.write_bytes(self.overview_uri, ("\n".join(self.overview) + "\n").encode())
            self.trylog.flush()
            if self.remote:
                storage.upload(self.trylog.resolved_path, self.csv_uri)
            else:
                self._append_local()
        except (BatchfleetError, OSError) as exc:
            log.warning("could not update the live logs: %s", exc)

    def _append_local(self) -> None:
        """The rows of the batches resolved since the last update, in the order they were resolved."""
        path = Path(self.csv_uri)
        if not self._copied:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)  # an earlier run's (resume writes the same logs again)
        with open(self.trylog.resolved_path, "rb") as source, open(path, "ab") as out:
            source.seek(self._copied)
            while chunk := source.read(COPY_CHUNK):
                out.write(chunk)
                self._copied += len(chunk)
