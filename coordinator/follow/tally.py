"""The coordinator's view of a job's batches: first commit wins, failures counted once.

Its size is fixed by the number of batches (about 23 bytes each: a status, a try count and the
first committed part), whatever the number of tries. A try's details are not kept: they go to
the watchers (`watch`) as they arrive, which stream them to the job's logs and fold them into the
report's aggregates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from common.messages import BatchResult
from common.parts.frames import PartRecord
from common.policy import Counts
from coordinator.follow.partrefs import PartRefs

log = logging.getLogger(__name__)

# A batch's status. SHORT: committed, but run() returned fewer results than items (its rows are
# kept; Azure ML v2 counts it as a failed mini-batch).
PENDING, COMMITTED, FAILED, SHORT = 0, 1, 2, 3
FAILURES_KEPT = 100  # failed batches whose results are kept whole (for tests and debugging)

# Called with every try folded in and whether it resolved its batch (False for retries, duplicates).
TryWatcher = Callable[[BatchResult, bool], None]
# Called with (batch id, node, attempt, succeeded, failed) of a part an earlier run committed.
ReuseWatcher = Callable[[int, str, int, int, int], None]


@dataclass
class NodeSeen:
    batches: int = 0
    failures: int = 0
    busy: int = 0
    last_seen: float = 0.0
    stopped: bool = False  # said node_stopped: it has left this job and uploaded its logs
    prepared: str = ""  # what getting ready cost it: code, environment, side inputs (node_started)


@dataclass
class FirstErrors:
    """The first error text of a failed batch, and of a committed one (a short return)."""

    failed: tuple[int, str] | None = None
    committed: tuple[int, str] | None = None

    def note(self, result: BatchResult) -> None:
        if not result.error:
            return
        if result.outcome == "failed" and self.failed is None:
            self.failed = (result.batch_id, result.error)
        elif result.outcome == "committed" and self.committed is None:
            self.committed = (result.batch_id, result.error)

    def first(self) -> tuple[int, str] | None:
        return self.failed or self.committed


@dataclass
class Tally:
    """Folds worker reports into per-batch outcomes; duplicates never count twice."""

    batches_total: int
    nodes: dict[str, NodeSeen] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # node -> why it left the job (init() failed)
    items_succeeded: int = 0
    items_failed: int = 0
    committed_count: int = 0  # short ones included
    failed_count: int = 0
    short_count: int = 0
    short_items: int = 0  # items the short returns left out
    reused: int = 0
    duplicates: int = 0
    tries_seen: int = 0
    last_progress: float = field(default_factory=time.time)
    last_busy: float = 0.0  # when a node last said it was running something (a heartbeat with busy > 0)
    errors: FirstErrors = field(default_factory=FirstErrors)
    failures: dict[int, BatchResult] = field(default_factory=dict)  # the first FAILURES_KEPT only
    changed: threading.Event = field(default_factory=threading.Event)  # set whenever a batch resolves

    def __post_init__(self) -> None:
        self.status = bytearray(self.batches_total)
        self.tries = bytearray(self.batches_total)  # the highest attempt seen, up to 255
        self.parts = PartRefs(self.batches_total)
        self._watchers: list[TryWatcher] = []
        self._reuse_watchers: list[ReuseWatcher] = []

    def watch(self, watcher: TryWatcher, reused: ReuseWatcher | None = None) -> None:
        self._watchers.append(watcher)
        if reused is not None:
            self._reuse_watchers.append(reused)

    def knows(self, batch_id: int) -> bool:
        return 0 <= batch_id < self.batches_total

    def resolved(self, batch_id: int) -> bool:
        return self.status[batch_id] != PENDING

    def is_committed(self, batch_id: int) -> bool:
        return self.status[batch_id] in (COMMITTED, SHORT)

    def is_failed(self, batch_id: int) -> bool:
        return self.status[batch_id] == FAILED

    def tries_of(self, batch_id: int) -> int:
        return self.tries[batch_id]

    def apply(self, result: BatchResult) -> bool:
        """Record one try; True when it resolved a batch for the first time."""
        batch_id = result.batch_id
        if not self.knows(batch_id):
            log.warning("ignored a report for batch %d, which is not in the plan (%d batches)",
                        batch_id, self.batches_total)  # fmt: skip
            return False
        self.tries_seen += 1
        if result.attempt > self.tries[batch_id]:
            self.tries[batch_id] = min(result.attempt, 255)
        node = self.nodes.get(result.node_id)
        if node is None:
            node = self.nodes[result.node_id] = NodeSeen()
        node.last_seen = time.time()
        resolves = result.outcome != "retry" and self.status[batch_id] == PENDING
        if result.outcome == "retry":
            node.failures += 1
        elif not resolves:
            self.duplicates += 1
        else:
            self.last_progress = time.time()
            node.batches += 1
            self.errors.note(result)
            if result.outcome == "committed":
                self._commit(batch_id, result.succeeded, result.failed, result.part)
            else:
                node.failures += 1
                self._fail(result)
        for watcher in self._watchers:
            watcher(result, resolves)
        return resolves

    def _commit(self, batch_id: int, succeeded: int, failed: int, part: str | None) -> None:
        if part:
            self.parts.set(batch_id, part)  # before the status: the merger reads the part once it sees it
        self.committed_count += 1
        self.items_succeeded += succeeded
        self.items_failed += failed
        if failed:
            self.short_count += 1
            self.short_items += failed
        self.status[batch_id] = SHORT if failed else COMMITTED
        if not self.changed.is_set():
            self.changed.set()

    def _fail(self, result: BatchResult) -> None:
        self.status[result.batch_id] = FAILED
        self.failed_count += 1
        self.items_failed += result.total
        if len(self.failures) < FAILURES_KEPT:
            self.failures[result.batch_id] = result
        if not self.changed.is_set():
            self.changed.set()

    def reuse(self, found: PartRecord, node_id: str, counted_as_reused: bool = True) -> bool:
        """A batch already committed in the store (resume, or a restarted coordinator); True if new."""
        batch_id = found.batch_id
        if not self.knows(batch_id) or self.resolved(batch_id):
            return False
        if found.attempt > self.tries[batch_id]:
            self.tries[batch_id] = min(found.attempt, 255)
        self._commit(batch_id, found.succeeded, found.failed, found.ref)
        if counted_as_reused:
            self.reused += 1
        for watcher in self._reuse_watchers:
            watcher(batch_id, node_id, found.attempt, found.succeeded, found.failed)
        return True

    def heartbeat(self, node_id: str, busy: int) -> None:
        node = self.nodes.setdefault(node_id, NodeSeen())
        node.busy = busy
        node.last_seen = time.time()
        node.stopped = node_id in self.dropped  # a dropped node takes no more of this job's work
        if busy > 0:
            self.last_busy = node.last_seen

    def drop(self, node_id: str, reason: str) -> None:
        """The node gave up on this job (its init() kept failing); the others go on."""
        self.left(node_id)
        self.dropped[node_id] = reason

    def working_nodes(self, now: float, window: float) -> list[str]:
        """Nodes heard from within `window` seconds that still serve the job."""
        return [
            name
            for name, node in self.nodes.items()
            if name != "broker" and name not in self.dropped and not node.stopped and now - node.last_seen <= window
        ]

    def left(self, node_id: str) -> None:
        """The node stopped serving this job (drained or ended); nobody waits for it again."""
        node = self.nodes.setdefault(node_id, NodeSeen())
        node.busy = 0
        node.last_seen = time.time()
        node.stopped = True

    def live_nodes(self) -> dict[str, float]:
        """Nodes that may still be serving the job, with when each was last heard from."""
        return {name: n.last_seen for name, n in self.nodes.items() if name != "broker" and not n.stopped}

    def busy(self, now: float, window: float) -> bool:
        """Some node said recently that it is running a batch."""
        return any(n.busy > 0 and now - n.last_seen <= window for n in self.nodes.values())

    def last_sign_of_work(self) -> float:
        """When a batch last resolved or a node last said it was busy: the stall clock runs from there.

        A heartbeat samples one moment; one that falls between a child's init() and its first
        batch, or between two batches, says idle though the node is working.
        """
        return max(self.last_progress, self.last_busy)

    def committed_ids(self) -> Iterator[int]:
        """Committed batches in order, short ones included."""
        return (b for b, code in enumerate(self.status) if code == COMMITTED or code == SHORT)

    def failed_ids(self) -> Iterator[int]:
        return self.with_status(FAILED)

    def short_ids(self) -> Iterator[int]:
        return self.with_status(SHORT)

    def with_status(self, wanted: int) -> Iterator[int]:
        status, mark = self.status, bytes([wanted])
        at = status.find(mark)
        while at >= 0:
            yield at
            at = status.find(mark, at + 1)

    @property
    def done(self) -> int:
        return self.committed_count + self.failed_count

    @property
    def finished(self) -> bool:
        return self.done >= self.batches_total

    def counts(self) -> Counts:
        return Counts(self.batches_total, self.failed_count + self.short_count, self.items_failed, self.short_count)
