"""The job's per-try logs, written row by row as tries arrive, never held.

- attempts.csv: every try, retries and duplicates included, in the order they arrived;
- processed_mini-batches.csv: one row per resolved batch (the try that decided it, or the part a
  resumed job reused). While the job runs, a copy grows in the order batches resolve (the live
  one, see report/live.py); the final file is in batch order, written as the batches before each
  one are resolved (report/reorder.py holds the ones that come early);
- logs/sys/error/<node>/<process>.txt: every failed try of that process.

They grow in a local temporary folder and are moved (or uploaded) into the job's logs at the end.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from common.messages import BatchResult
from common.safepath import safe_component
from common.storage import StorageOptions, is_remote, join_uri, open_storage
from coordinator.report.reorder import ReorderWindow
from coordinator.scratch import scratch_dir

ATTEMPTS = "attempts.csv"
PROCESSED = "processed_mini-batches.csv"
RESOLVED = "resolved.csv"  # processed rows in the order batches resolved (the live copy)
OPEN_ERROR_FILES = 64  # per-process error files kept open at once
ATTEMPT_COLUMNS = ["batch_id", "attempt", "node", "process", "outcome", "seconds", "error"]
BATCH_COLUMNS = [
    "batch_id",
    "tries",
    "node",
    "process",
    "start",
    "total",
    "succeeded",
    "failed",
    "seconds",
    "download_seconds",
    "run_seconds",
    "commit_seconds",
    "status",
    "error",
]


def batch_status(outcome: str, failed: int) -> str:
    if outcome != "committed":
        return "failed"
    return "partial" if failed else "succeeded"


def csv_field(text: str) -> str:
    """One CSV field as csv.writer writes it (quoted only when it must be)."""
    if '"' in text or "," in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else ""


class _Clock:
    """Local time stamps to the second; tries arrive in bursts within the same second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, epoch: float) -> str:
        if not epoch:
            return ""
        second = int(epoch)
        if second != self._second:
            self._second, self._text = second, stamp(second)
        return self._text


def error_entry(r: BatchResult) -> str:
    """A failed try as logs/sys/error/<node>/<process>.txt lists it."""
    entry = f"{stamp(r.started) or '-'} batch {r.batch_id} attempt {r.attempt} {r.outcome}: {r.error}"
    return entry + (f"\n{r.traceback.rstrip()}" if r.traceback else "") + "\n"


class TryLog:
    """The per-try CSV files and error logs of one job, streamed to a local folder."""

    def __init__(self, tries_of: Callable[[int], int]) -> None:
        self._tries_of = tries_of
        self.folder = scratch_dir("trylog")
        self._attempts = open(self.folder / ATTEMPTS, "w", newline="", encoding="utf-8")
        self._attempts.write(",".join(ATTEMPT_COLUMNS) + "\r\n")
        header = (",".join(BATCH_COLUMNS) + "\r\n").encode()
        self._resolved = open(self.folder / RESOLVED, "wb")
        self._resolved.write(header)
        self._processed = open(self.folder / PROCESSED, "wb")
        self._processed.write(header)
        self._ordered = ReorderWindow(self._processed, self.folder)
        self._errors: dict[tuple[str, str], TextIO] = {}  # (node, file name) -> its open error file
        self._clock = _Clock()
        self._closed = False
        self._extras_added = False  # place()'s extra error texts, once

    @property
    def resolved_path(self) -> Path:
        """The processed rows so far, in the order batches resolved (flushed by `flush`)."""
        return self.folder / RESOLVED

    def add(self, r: BatchResult, resolved: bool) -> None:
        """One try (a Tally watcher); the batch's row too when the try resolved it."""
        error = r.error or ""
        where = f"{csv_field(r.node_id)},{csv_field(r.process)}"
        self._attempts.write(f"{r.batch_id},{r.attempt},{where},{r.outcome},{r.seconds:.3f},{csv_field(error)}\r\n")
        if error and r.outcome != "committed":
            self._error(r)
        if not resolved:
            return
        line = (
            f"{r.batch_id},{max(self._tries_of(r.batch_id), r.attempt)},{where},{self._clock(r.started)},"
            f"{r.total},{r.succeeded},{r.failed},{r.seconds:.3f},{r.download_seconds:.3f},{r.run_seconds:.3f},"
            f"{r.commit_seconds:.3f},{batch_status(r.outcome, r.failed)},"
            f"{csv_field(error.splitlines()[0]) if error else ''}\r\n"
        )
        self._row(r.batch_id, line.encode())

    def reused(self, batch_id: int, node_id: str, attempt: int, succeeded: int, failed: int) -> None:
        """A batch committed by an earlier run of the job (a Tally reuse watcher)."""
        fields = (str(batch_id), str(attempt), csv_field(node_id), "", "", str(succeeded + failed), str(succeeded),
                  str(failed), "0.000", "0.000", "0.000", "0.000", batch_status("committed", failed), "")  # fmt: skip
        self._row(batch_id, (",".join(fields) + "\r\n").encode())

    def _row(self, batch_id: int, line: bytes) -> None:
        self._resolved.write(line)
        self._ordered.add(batch_id, line)

    def _error(self, r: BatchResult) -> None:
        # Node and process names come from reports: one safe folder and file name each.
        key = (safe_component(r.node_id), safe_component(f"{r.process or 'node'}.txt"))
        out = self._errors.get(key)
        if out is None:
            if len(self._errors) >= OPEN_ERROR_FILES:  # node names come from reports: bound the handles
                self._close_errors()
            path = self.folder / "error" / key[0] / key[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            out = self._errors[key] = open(path, "a", encoding="utf-8")  # closed in _close_errors()
        out.write(error_entry(r))

    def _close_errors(self) -> None:
        for handle in self._errors.values():
            handle.close()
        self._errors.clear()

    def flush(self) -> None:
        if not self._closed:
            self._resolved.flush()

    def place(self, logs: str, options: StorageOptions, extra_errors: dict[tuple[str, str], str]) -> None:
        """Move the files into the job's `logs` folder (local or remote); the log is gone after.

        `extra_errors` adds (node, file name) -> text error files (a dropped node's init.txt). Placing
        again after an upload failed uploads the same files again.
        """
        self.close()
        if not self._extras_added:
            self._extras_added = True
            for (node, name), text in extra_errors.items():
                path = self.folder / "error" / safe_component(node) / safe_component(name)
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as out:
                    out.write(text)
        report = join_uri(logs, "sys", "job_report")
        moves = [(self.folder / name, join_uri(report, name)) for name in (ATTEMPTS, PROCESSED)]
        errors = self.folder / "error"
        if errors.exists():
            for path in sorted(errors.glob("*/*")):
                moves.append((path, join_uri(logs, "sys", "error", path.parent.name, path.name)))
        for source, uri in moves:
            if is_remote(uri):
                open_storage(uri, options).upload(source, uri)
            else:
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, uri)
        self.discard()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ordered.close()
        self._close_errors()
        for handle in (self._attempts, self._resolved, self._processed):
            handle.close()

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
