"""The merged output, written while the job runs: committed parts in mini-batch order, as they come.

A thread follows the tally: whenever the next batch in order is resolved, its part (if it committed
one) is appended to a temporary file beside the output; batches resolved out of order wait in
the tally, which holds their part references (the rows are in the store already). When the job
succeeds only the last few parts remain to be written before the file takes its name (or is
uploaded); otherwise it is deleted.

Parts on object storage are fetched ahead of the merge, in parallel, into a window of at most
WINDOW_BYTES in memory; what does not fit is spilled to a local file, so a batch that holds the
merge up for long (a straggler, retried) does not leave thousands of GETs for the end.

A store that does not answer (StoreUnreachable) is waited out as workers wait out one: the merge
stays at the batch it could not read and tries again with capped backoff, while the job runs and,
for up to OUTAGE_PATIENCE seconds, when it ends; only a longer outage fails the merge.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from common.jobarea import JobArea
from common.messages import JobConfig
from common.parts.frames import FrameMismatch, PartReader
from common.parts.rows import PartMerger
from common.storage import StorageOptions, StoreUnreachable, is_remote, join_uri, open_storage
from coordinator.follow.gate import part_file_in_area
from coordinator.follow.tally import COMMITTED, PENDING, SHORT, Tally
from coordinator.scratch import scratch_dir

log = logging.getLogger(__name__)

WINDOW_BYTES = 64 << 20  # parts fetched ahead and held in memory (remote parts only)
FETCHERS = 8  # parallel GETs of remote parts
AHEAD = 4096  # remote parts fetched ahead of the merge at most (held in memory or spilled)
OUTAGE_PATIENCE = 300.0  # seconds the end of the merge waits out an unreachable store
BACKOFF_MAX = 8.0  # seconds between tries while the store does not answer
PACE = 0.05  # seconds the merge gathers commits before its next pass


class RemoteWindow:
    """Remote parts of resolved batches ahead of the merge, fetched in parallel; spilled past a budget."""

    def __init__(self, reader: PartReader, spill_dir: Path) -> None:
        self._reader = reader
        self._pool = ThreadPoolExecutor(FETCHERS, thread_name_prefix="bf-fetch")
        self._pending: dict[int, Future[bytes]] = {}
        self._held: dict[int, bytes] = {}
        self._held_bytes = 0
        self._spilled: dict[int, tuple[int, int]] = {}
        self._spill_path = spill_dir / "spill.bin"
        self._spill = open(self._spill_path, "w+b")  # closed in close()

    def __len__(self) -> int:
        return len(self._pending) + len(self._held) + len(self._spilled)

    def __contains__(self, batch_id: int) -> bool:
        return batch_id in self._pending or batch_id in self._held or batch_id in self._spilled

    def fetch(self, batch_id: int, uri: str, offset: int, length: int) -> None:
        self._pending[batch_id] = self._pool.submit(self._reader.read_frame, uri, offset, length, batch_id)

    def settle(self) -> int:
        """Move finished fetches into memory, or to the spill file once memory is spent; returns how many.

        Fetches the store did not answer are dropped (fetched again later); then the first such
        error is raised, once, for the merge to wait the outage out.
        """
        unreachable: StoreUnreachable | None = None
        arrived = 0
        for batch_id in [b for b, f in self._pending.items() if f.done()]:
            try:
                data = self._pending.pop(batch_id).result()
            except StoreUnreachable as exc:
                unreachable = unreachable or exc
                continue
            arrived += 1
            if self._held_bytes + len(data) <= WINDOW_BYTES:
                self._held[batch_id] = data
                self._held_bytes += len(data)
            else:
                self._spill.seek(0, 2)
                self._spilled[batch_id] = (self._spill.tell(), len(data))
                self._spill.write(data)
        if unreachable is not None:
            raise unreachable
        return arrived

    def take(self, batch_id: int) -> bytes:
        future = self._pending.pop(batch_id, None)
        if future is not None:
            return future.result()
        data = self._held.pop(batch_id, None)
        if data is not None:
            self._held_bytes -= len(data)
            return data
        offset, length = self._spilled.pop(batch_id)
        self._spill.seek(offset)
        return self._spill.read(length)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._spill.close()


class StreamMerger:
    """Merges a job's committed parts into its output file while the job runs."""

    def __init__(self, job: JobConfig, tally: Tally, options: StorageOptions) -> None:
        settings = job.settings
        self.tally = tally
        self.cursor = 0
        self.dest_uri = join_uri(job.output_uri, settings.merged_file_name())
        self._options = options
        self._scratch = scratch_dir("merge")
        if is_remote(self.dest_uri):
            self._path = self._scratch / settings.merged_file_name()
        else:
            dest = Path(self.dest_uri)
            self._path = dest.with_name(f".{dest.name}.tmp")
        self._merger = PartMerger(settings.append_row_format, self._path)
        self._reader = PartReader(open_storage(job.store_uri, options))
        self._parts_root = JobArea(job.store_uri).parts
        self._checked: set[str] = set()  # part files found inside the job area (local segments repeat)
        self._remote = RemoteWindow(self._reader, self._scratch) if is_remote(job.store_uri) else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._outage: float | None = None  # when the store stopped answering the merge (monotonic)
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="bf-merge", daemon=True)

    def start(self) -> StreamMerger:
        self._thread.start()
        return self

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            if self._outage is None:
                self.tally.changed.wait(0.5)
                # Gather commits for a moment: waking at each one would cost every commit a wake-up
                # of this thread and a turn of the GIL; finish() merges what is left at once.
                if self._stop.wait(PACE):
                    break
                self.tally.changed.clear()
            elif self._stop.wait(delay):  # the store is down: try again later, not at every report
                break
            try:
                self.advance()
                delay = 0.5
            except StoreUnreachable as exc:
                delay = self._note_outage(exc, delay)
            except BaseException as exc:  # kept for finish(), which raises it in the job's thread
                self._error = exc
                return

    def _note_outage(self, exc: StoreUnreachable, delay: float) -> float:
        """Log an outage once and return the next delay (the merge stays at the batch it could not read)."""
        if self._outage is None:
            self._outage = time.monotonic()
            log.warning("merging the output waits for the store: %s", exc.line())
        return min(delay * 2, BACKOFF_MAX)

    def _patiently(self, step: Callable[[], object]) -> None:
        """Run `step`, waiting out an unreachable store for up to OUTAGE_PATIENCE seconds."""
        deadline, delay = time.monotonic() + OUTAGE_PATIENCE, 0.5
        while True:
            try:
                step()
                return
            except StoreUnreachable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                delay = self._note_outage(exc, delay)
                time.sleep(delay)

    def advance(self) -> None:
        """Write every part that is next in order and resolved; fetch remote ones ahead."""
        with self._lock:
            status, total = self.tally.status, self.tally.batches_total
            answered = self._fetch_ahead(status, total) if self._remote is not None else 0
            start = self.cursor
            while self.cursor < total and status[self.cursor] != PENDING:
                batch_id = self.cursor
                if status[batch_id] in (COMMITTED, SHORT):
                    data = self._read(batch_id)
                    if data:
                        answered += 1
                        self._merger.add(data, f"batch {batch_id}")
                self.cursor += 1
            if self.cursor != start:
                self._merger.flush()
            if self._outage is not None and answered:
                log.info("the store answers the merge again (after %.1f s)", time.monotonic() - self._outage)
                self._outage = None

    def _read(self, batch_id: int) -> bytes:
        if self._remote is not None and batch_id in self._remote:
            return self._remote.take(batch_id)
        span = self._span(batch_id)
        return self._reader.read_frame(*span, batch_id) if span else b""

    def _span(self, batch_id: int) -> tuple[str, int, int] | None:
        """Where the batch's part is; rows are read from the job's own parts/ folder and nowhere else,
        whatever a report said (and each frame's header must name the batch: PartReader.read_frame)."""
        span = self.tally.parts.span(batch_id)
        if span is not None and span[0] not in self._checked:
            if not part_file_in_area(span[0], self._parts_root):
                raise FrameMismatch(f"batch {batch_id} was reported committed to {span[0]}, outside "
                                    f"{self._parts_root}: not merged")  # fmt: skip
            self._checked.add(span[0])
        return span

    def _fetch_ahead(self, status: bytearray, total: int) -> int:
        """Start fetching resolved parts ahead of the merge; returns how many arrived since the last call."""
        assert self._remote is not None
        arrived = self._remote.settle()
        batch_id = self.cursor
        end = min(total, self.cursor + AHEAD)
        room = 1 if self._outage is not None else AHEAD  # while the store is down: one GET, a probe
        while batch_id < end and len(self._remote) < AHEAD and room:
            if status[batch_id] in (COMMITTED, SHORT) and batch_id not in self._remote:
                span = self._span(batch_id)
                if span and span[2]:
                    self._remote.fetch(batch_id, *span)
                    room -= 1
            batch_id += 1
        return arrived

    def finish(self, keep: bool) -> tuple[str, int] | None:
        """Stop following; with `keep` (the job succeeded) write the rest and give the file its name.

        Returns (output URI, rows), or None when the file was not kept (or finish was called before).
        Raises a merge error.
        """
        if self._finished:
            return None
        self._finished = True
        self._stop.set()
        self.tally.changed.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            if not keep:
                return None
            self._patiently(self.advance)
            if self.cursor < self.tally.batches_total:
                raise RuntimeError(f"merge stopped at batch {self.cursor}: it was never resolved")
            rows = self._merger.close()
            if is_remote(self.dest_uri):
                store = open_storage(self.dest_uri, self._options)
                self._patiently(lambda: store.upload(self._path, self.dest_uri))
            else:
                self._path.replace(self.dest_uri)
            log.info("merged %d rows into %s", rows, self.dest_uri)
            return self.dest_uri, rows
        finally:
            self._merger.discard()  # closes; deletes what was not renamed or uploaded
            self._close()

    def _close(self) -> None:
        if self._remote is not None:
            self._remote.close()
        self._reader.close()
        shutil.rmtree(self._scratch, ignore_errors=True)


def merge_output(job: JobConfig, tally: Tally, options: StorageOptions) -> tuple[str, int] | None:
    """Merge every committed part now (the tally is complete); None for summary_only."""
    if job.settings.output_action != "append_row":
        return None
    return StreamMerger(job, tally, options).finish(keep=True)
