"""Logs Azure ML keeps current while a job runs: job_progress_overview.<hour>.txt and
logs/sys/job_report/processed_mini-batches.csv (rewritten sorted once the job ends)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from common.errors import BatchfleetError
from common.messages import JobConfig
from common.storage import StorageOptions, is_remote, join_uri, open_storage
from coordinator.follow.tally import Tally
from coordinator.report.joblogs import BATCH_COLUMNS, batch_row, csv_bytes, processed_batches_csv

log = logging.getLogger(__name__)

LIVE_EVERY = 10.0  # seconds between updates
REMOTE_ROWS_PER_SECOND = 5000  # a remote CSV is rewritten whole: big ones less often


def overview_name(started: float) -> str:
    return f"job_progress_overview.{time.strftime('%Y%m%d%H', time.localtime(started))}.txt"


class LiveLogs:
    """Call update(tally) often; it writes every LIVE_EVERY seconds at most."""

    def __init__(self, job: JobConfig, started: float, overview: list[str], options: StorageOptions) -> None:
        self.logs = join_uri(job.output_uri, "logs")
        self.overview_uri = join_uri(self.logs, overview_name(started))
        self.csv_uri = join_uri(self.logs, "sys", "job_report", "processed_mini-batches.csv")
        self.overview = overview
        self.options = options
        self.remote = is_remote(self.logs)
        self._last = 0.0
        self._cursor = 0  # tally.records already appended to a local CSV

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
            if self.remote:
                storage.write_bytes(self.csv_uri, processed_batches_csv(tally))
            else:
                self._append_local(tally)
        except (BatchfleetError, OSError) as exc:
            log.warning("could not update the live logs: %s", exc)

    def _append_local(self, tally: Tally) -> None:
        """Rows of the batches resolved since the last update, in the order they were resolved."""
        path = Path(self.csv_uri)
        rows: list[list[object]] = []
        for result in tally.records[self._cursor :]:
            final = tally.committed.get(result.batch_id) or tally.failed.get(result.batch_id)
            if final is result:
                rows.append(batch_row(tally, result))
        self._cursor = len(tally.records)
        if self._cursor and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            rows.insert(0, [*BATCH_COLUMNS])
        if rows:
            with open(path, "ab") as handle:
                handle.write(csv_bytes(rows))
