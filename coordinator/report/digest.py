"""What the report and `status` show about a job's tries, folded in one try at a time, in fixed memory.

A million tries cannot be kept (a BatchResult is about 1.4 KB), and the report needs none of them
whole: counters, throughput over time in bins that widen as the job runs, uniform samples of
durations and of tries for the timeline (exact while the job is small), error groups, the
slowest tries and per-node totals. `TryDigest.add` costs a few microseconds.
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from common.messages import BatchResult, Outcome

T = TypeVar("T")

DURATIONS_KEPT = 20_000  # tries whose durations are kept (a uniform sample beyond; no numpy needed)
TRIES_KEPT = 3000  # tries kept per kind (committed, not committed) for the timeline
SLOWEST = 10
GROUPS_KEPT = 1000  # error groups told apart; later kinds of error are only counted
IDS_KEPT = 1000  # batch ids kept per error group
THROUGHPUT_BINS = 4096
FIRST_BIN = 0.005  # seconds; bins double in width whenever the job outgrows them


class TryMark(NamedTuple):
    """A try as the timeline draws it (the names match BatchResult's)."""

    batch_id: int
    attempt: int
    node_id: str
    process: str
    outcome: Outcome
    started: float
    seconds: float


class Phases(NamedTuple):
    """A try's durations (the names match BatchResult's)."""

    outcome: Outcome
    seconds: float
    download_seconds: float
    run_seconds: float
    commit_seconds: float


class Reservoir(Generic[T]):
    """A uniform sample of at most `size` of the items seen (all of them while there are fewer).

    Algorithm L (Li, 1994): past `size`, the next item to keep is drawn ahead, so the items in
    between cost a comparison, not a random number. Ask `slot()` first, and build the item only
    when it is kept.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seen = 0
        self.items: list[T] = []
        self._random = random.Random(seed)
        self._w = math.exp(math.log(self._uniform()) / size)
        self._next = size + self._gap()

    def _uniform(self) -> float:
        return self._random.random() or 1e-300

    def _gap(self) -> int:
        return int(math.log(self._uniform()) / math.log1p(-self._w)) + 1 if self._w < 1.0 else 1

    def slot(self) -> int:
        """Count one more item; the index to store it at, -1 to skip it, len(items) to append it."""
        self.seen += 1
        if self.seen <= self.size:
            return self.seen - 1
        if self.seen < self._next:
            return -1
        self._w *= math.exp(math.log(self._uniform()) / self.size)
        self._next += self._gap()
        return self._random.randrange(self.size)

    def put(self, slot: int, item: T) -> None:
        if slot == len(self.items):
            self.items.append(item)
        else:
            self.items[slot] = item

    def add(self, item: T) -> None:
        slot = self.slot()
        if slot >= 0:
            self.put(slot, item)

    @property
    def scale(self) -> float:
        """How many items each kept one stands for."""
        return self.seen / len(self.items) if self.items else 1.0


class Throughput:
    """Items and tries per bin of end time since the origin; bins double in width as the job grows."""

    def __init__(self) -> None:
        self.width = FIRST_BIN
        self.items = array("d", bytes(8 * THROUGHPUT_BINS))
        self.good = array("d", bytes(8 * THROUGHPUT_BINS))
        self.bad = array("d", bytes(8 * THROUGHPUT_BINS))
        self.last_end = 0.0  # seconds after the origin that the last try ended
        self.count = 0

    def add(self, end: float, committed: bool, items: int) -> None:
        if end < 0:
            return  # ended before the job started (a restarted coordinator's origin)
        index = int(end / self.width)
        while index >= THROUGHPUT_BINS:
            self._widen()
            index = int(end / self.width)
        if committed:
            self.good[index] += 1
            self.items[index] += items
        else:
            self.bad[index] += 1
        self.count += 1
        if end > self.last_end:
            self.last_end = end

    def _widen(self) -> None:
        for values in (self.items, self.good, self.bad):
            merged = [values[i] + values[i + 1] for i in range(0, THROUGHPUT_BINS, 2)]
            values[: len(merged)] = array("d", merged)
            values[len(merged) :] = array("d", bytes(8 * (THROUGHPUT_BINS - len(merged))))
        self.width *= 2

    def rebinned(self, width: float, count: int) -> tuple[list[float], list[float], list[float]]:
        """Counts per bin of `width` seconds (each fine bin goes where its middle falls)."""
        items, good, bad = [0.0] * count, [0.0] * count, [0.0] * count
        last = count - 1
        used = min(int(self.last_end / self.width) + 1, THROUGHPUT_BINS)
        for k in range(used):
            if not (self.good[k] or self.bad[k]):
                continue
            j = min(int((k + 0.5) * self.width / width), last)
            items[j] += self.items[k]
            good[j] += self.good[k]
            bad[j] += self.bad[k]
        return items, good, bad


@dataclass
class FailureGroup:
    """Tries that failed with the same error type and first message line."""

    error_type: str
    message: str
    first: BatchResult
    tries: int = 0
    failed_tries: int = 0  # tries not committed (the others are short returns that said why)
    batches: set[int] = field(default_factory=set)
    final: set[int] = field(default_factory=set)
    more_batches: int = 0  # distinct batches beyond IDS_KEPT (counted, not kept)
    more_final: int = 0

    def add(self, result: BatchResult) -> None:
        self.tries += 1
        if result.outcome != "committed":
            self.failed_tries += 1
        if (result.started, result.batch_id, result.attempt) < (
            self.first.started, self.first.batch_id, self.first.attempt
        ):  # fmt: skip
            self.first = result
        _keep(self.batches, result.batch_id, self, "more_batches")
        if result.outcome == "failed":
            _keep(self.final, result.batch_id, self, "more_final")

    @property
    def batch_count(self) -> int:
        return len(self.batches) + self.more_batches

    @property
    def final_count(self) -> int:
        return len(self.final) + self.more_final


def _keep(ids: set[int], batch_id: int, group: FailureGroup, overflow: str) -> None:
    if batch_id in ids:
        return
    if len(ids) < IDS_KEPT:
        ids.add(batch_id)
    else:
        setattr(group, overflow, getattr(group, overflow) + 1)


@dataclass
class NodeStats:
    """What one node did, from its tries (and, in the report, its resource samples)."""

    node_id: str
    processes: set[str] = field(default_factory=set)
    tries: int = 0
    committed: int = 0
    failed_tries: int = 0
    items: int = 0
    seconds: float = 0.0
    last_seen: float = 0.0
    cpu: list[float] = field(default_factory=list)
    peak_rss: int = 0


def first_line(text: str | None) -> str:
    """The first non-blank line of an error message, trimmed."""
    for line in (text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 300 else line[:299] + "…"
    return "(no message)"


class TryDigest:
    """Every try of a job folded into what the report shows; fixed size whatever the job's."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = origin  # the job's start; None: the first try's
        self.tries = 0
        self.retries = 0
        self.first_start = 0.0
        self.throughput = Throughput()
        self.durations: Reservoir[Phases] = Reservoir(DURATIONS_KEPT)
        self.committed_marks: Reservoir[TryMark] = Reservoir(TRIES_KEPT, seed=1)
        self.other_marks: Reservoir[TryMark] = Reservoir(TRIES_KEPT, seed=2)
        self.lanes: set[tuple[str, str]] = set()
        self.groups: dict[tuple[str, str], FailureGroup] = {}
        self.more_groups_tries = 0  # failed tries of kinds beyond GROUPS_KEPT
        self.nodes: dict[str, NodeStats] = {}
        self._slowest: list[tuple[float, int, BatchResult]] = []

    @classmethod
    def of(cls, results: Iterable[BatchResult], origin: float | None = None) -> TryDigest:
        digest = cls(origin)
        for result in results:
            digest.add(result)
        return digest

    def add(self, r: BatchResult, resolved: bool = False) -> None:
        """Fold one try in (`resolved` is the tally's say; the digest does not need it)."""
        started, seconds, outcome = r.started, r.seconds, r.outcome
        if self.origin is None:
            self.origin = started
        if not self.tries or started < self.first_start:
            self.first_start = started
        self.tries += 1
        committed = outcome == "committed"
        if outcome == "retry":
            self.retries += 1
        self.throughput.add(started + seconds - self.origin, committed, r.succeeded)
        slot = self.durations.slot()
        if slot >= 0:
            self.durations.put(slot, Phases(outcome, seconds, r.download_seconds, r.run_seconds, r.commit_seconds))
        marks = self.committed_marks if committed else self.other_marks
        slot = marks.slot()
        if slot >= 0:
            marks.put(slot, TryMark(r.batch_id, r.attempt, r.node_id, r.process, outcome, started, seconds))
        lane = (r.node_id, r.process)
        if lane not in self.lanes:
            self.lanes.add(lane)
        if not committed or r.error:
            self._group(r)
        self._node(r, committed)
        if len(self._slowest) < SLOWEST:
            heapq.heappush(self._slowest, (seconds, self.tries, r))
        elif seconds > self._slowest[0][0]:
            heapq.heapreplace(self._slowest, (seconds, self.tries, r))

    def _group(self, r: BatchResult) -> None:
        key = (r.error_type or "Error", first_line(r.error))
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= GROUPS_KEPT:
                self.more_groups_tries += 1
                return
            group = self.groups[key] = FailureGroup(key[0], key[1], first=r)
        group.add(r)

    def _node(self, r: BatchResult, committed: bool) -> None:
        s = self.nodes.get(r.node_id)
        if s is None:
            s = self.nodes[r.node_id] = NodeStats(r.node_id)
        if r.process:
            s.processes.add(r.process)
        s.tries += 1
        if committed:
            s.committed += 1
        else:
            s.failed_tries += 1
        s.items += r.succeeded
        s.seconds += r.seconds
        end = r.started + r.seconds
        if end > s.last_seen:
            s.last_seen = end

    def failure_groups(self) -> list[FailureGroup]:
        """Error groups, most frequent first."""
        return sorted(self.groups.values(), key=lambda g: (-g.tries, g.error_type, g.message))

    def slowest(self) -> list[BatchResult]:
        return [r for _, _, r in sorted(self._slowest, key=lambda entry: (-entry[0], entry[1]))]

    def marks(self) -> tuple[list[TryMark], list[TryMark]]:
        """The kept tries: (not committed, committed), each by start time."""
        by_start = lambda m: m.started  # noqa: E731
        return sorted(self.other_marks.items, key=by_start), sorted(self.committed_marks.items, key=by_start)

    @property
    def plot_origin(self) -> float:
        return self.origin if self.origin else self.first_start
