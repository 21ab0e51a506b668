"""The coordinator's view of a job's batches: first commit wins, failures counted once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from common.messages import BatchResult
from common.policy import Counts


@dataclass
class NodeSeen:
    batches: int = 0
    failures: int = 0
    busy: int = 0
    last_seen: float = 0.0
    stopped: bool = False  # said node_stopped: it has left this job and uploaded its logs


@dataclass
class Tally:
    """Folds worker reports into per-batch outcomes; duplicates never count twice."""

    batches_total: int
    committed: dict[int, BatchResult] = field(default_factory=dict)
    failed: dict[int, BatchResult] = field(default_factory=dict)
    short: set[int] = field(default_factory=set)  # committed, but with failed items (a short return)
    tries: dict[int, int] = field(default_factory=dict)
    records: list[BatchResult] = field(default_factory=list)
    nodes: dict[str, NodeSeen] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # node -> why it left the job (init() failed)
    items_succeeded: int = 0
    items_failed: int = 0
    reused: int = 0
    duplicates: int = 0
    last_progress: float = field(default_factory=time.time)

    def resolved(self, batch_id: int) -> bool:
        return batch_id in self.committed or batch_id in self.failed

    def apply(self, result: BatchResult) -> bool:
        """Record one try; True when it resolved a batch for the first time."""
        self.records.append(result)
        self.tries[result.batch_id] = max(self.tries.get(result.batch_id, 0), result.attempt)
        node = self.nodes.setdefault(result.node_id, NodeSeen())
        node.last_seen = time.time()
        if result.outcome == "retry":
            node.failures += 1
            return False
        if self.resolved(result.batch_id):
            self.duplicates += 1
            return False
        self.last_progress = time.time()
        node.batches += 1
        if result.outcome == "committed":
            self._commit(result)
        else:
            node.failures += 1
            self.failed[result.batch_id] = result
            self.items_failed += result.total
        return True

    def reuse(self, result: BatchResult, counted_as_reused: bool = True) -> None:
        """A batch already committed in the store (resume, or a restarted coordinator)."""
        if self.resolved(result.batch_id):
            return
        self._commit(result)
        if counted_as_reused:
            self.reused += 1

    def _commit(self, result: BatchResult) -> None:
        self.committed[result.batch_id] = result
        self.items_succeeded += result.succeeded
        self.items_failed += result.failed
        if result.failed:
            self.short.add(result.batch_id)

    def heartbeat(self, node_id: str, busy: int) -> None:
        node = self.nodes.setdefault(node_id, NodeSeen())
        node.busy = busy
        node.last_seen = time.time()
        node.stopped = node_id in self.dropped  # a dropped node takes no more of this job's work

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

    @property
    def done(self) -> int:
        return len(self.committed) + len(self.failed)

    @property
    def finished(self) -> bool:
        return self.done >= self.batches_total

    def counts(self) -> Counts:
        short = len(self.short)
        return Counts(self.batches_total, len(self.failed) + short, self.items_failed, short)
