"""Retry and threshold decisions as pure functions over plain values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from common.broker.base import Settle
from common.messages import Outcome
from common.settings import RunSettings

TryResult = Literal["committed", "error"]


def settle_for(result: TryResult, attempt: int, run_max_try: int) -> tuple[Settle, Outcome]:
    """How to settle a delivery after one try, and what to report.

    A committed try is acked. A failed try is requeued while tries remain (the broker
    counts it), and acked as failed on the last one so the coordinator hears why.
    """
    if result == "committed":
        return "ack", "committed"
    if attempt < run_max_try:
        return "requeue", "retry"
    return "ack", "failed"


@dataclass(frozen=True)
class Counts:
    """What the thresholds look at. `batches_failed` includes the `batches_short` ones: committed
    mini-batches whose run() returned fewer results than items (Azure ML v2 counts them as failed)."""

    batches_total: int
    batches_failed: int
    items_failed: int
    batches_short: int = 0


def threshold_breach(counts: Counts, settings: RunSettings) -> str | None:
    """The reason the job must stop now, or None while it may go on."""
    if settings.error_threshold != -1 and counts.items_failed > settings.error_threshold:
        return f"{counts.items_failed} failed items exceed error_threshold={settings.error_threshold}"
    short = f" ({counts.batches_short} of them short returns)" if counts.batches_short else ""
    if settings.allowed_failed_count != -1 and counts.batches_failed > settings.allowed_failed_count:
        limit = settings.allowed_failed_count
        return f"{counts.batches_failed} failed mini-batches{short} exceed allowed_failed_count={limit}"
    if settings.allowed_failed_percent < 100 and counts.batches_total > 0:
        percent = 100.0 * counts.batches_failed / counts.batches_total
        if percent > settings.allowed_failed_percent:
            return (
                f"{counts.batches_failed} of {counts.batches_total} mini-batches failed{short} ({percent:.1f}%), "
                f"over allowed_failed_percent={settings.allowed_failed_percent:g}"
            )
    return None


def is_stalled(now: float, last_work: float, busy: bool, stall_timeout: float) -> bool:
    """No result and no busy worker heard from for stall_timeout seconds: `last_work` is the last
    of either, `busy` whether the latest word from some node says it is running a batch."""
    return not busy and now - last_work > stall_timeout


def prefetch_for(processes: int, batch_seconds: float | None) -> int:
    """Deliveries a node may hold for a job: two in each child's pipe plus about a second of
    queued work per child, between 3 and 256 per child.

    Fast batches need a deep window: each is acked only after its report is confirmed, so the
    window must cover the batches run during a linger and confirm round trip (16 ms or more on
    RabbitMQ) plus what waits in the children's pipes; 64 per child let sub-millisecond batches
    run dry (measured: W1 fleet 4.6% slower). Slow ones get a shallow one, so a node does not
    hoard work other nodes could be doing.
    """
    if batch_seconds is None:
        return 3 * processes
    per_child = 2 + math.ceil(1.0 / max(batch_seconds, 1e-3))
    return processes * min(max(per_child, 3), 256)


PACKED_PACE = 0.05  # seconds: batches faster than this are worth packing several to a message


def keeps_packed(held: int, window: int, batch_seconds: float | None) -> bool:
    """Whether a node runs one more mini-batch that came packed with others, or hands it back untried.

    Packs pay off only for fast batches, and then a few extra held cost milliseconds. Until its
    batches have proved fast, a node holds no more than its window, so slow batches spread over
    nodes as single messages do (handed-back members return as messages of their own).
    """
    if batch_seconds is not None and batch_seconds < PACKED_PACE:
        return True
    return held < window


PACKED_WAIT = 0.2  # seconds a node waits to learn its batches' pace before handing packed extras back
Fate = Literal["run", "wait", "release"]


def extra_fate(batch_seconds: float | None, waited: float) -> Fate:
    """What becomes of a packed mini-batch a node took beyond its window while its batches' pace was
    unknown: it runs in its turn once batches prove fast, goes back once they prove slow, and goes back
    too when no batch has finished within PACKED_WAIT. Handing it back at once sent it behind every
    other batch of the queue, where the streaming merge waited for it until the job's end."""
    if batch_seconds is not None:
        return "run" if batch_seconds < PACKED_PACE else "release"
    return "wait" if waited < PACKED_WAIT else "release"


def messages_window(window: int, per_message: int, batch_seconds: float | None) -> int:
    """Broker prefetch for a window of `window` mini-batches sent up to `per_message` to a message.

    A pack is settled with its last member, so one more pack is in hand while it finishes. Once
    batches prove slow, a node keeps packed members only up to its window and hands the rest back
    (see `keeps_packed`), so the queue turns to lone messages: the window then counts messages one
    for one, or the node would sit on a half-done pack waiting for the next.
    """
    if per_message <= 1 or (batch_seconds is not None and batch_seconds >= PACKED_PACE):
        return window
    packs = -(-window // per_message)
    # Pace unknown: no second pack yet, or every pack arriving while the first runs would go back.
    return packs if batch_seconds is None else packs + 1


PIPE_SECONDS = 0.02  # of work kept in a child's pipe when batches are fast


def pipeline_depth(batch_seconds: float | None) -> int:
    """Tasks kept in one child's pipe: two, or about 20 ms of work (4 to 128) when batches are fast.

    The supervising thread shares the node's GIL with dispatch and reporting, and wakes to top
    the pipe up once half has drained: with 20 ms of work queued a child never waits for it,
    and the thread wakes every 10 ms, not every few batches. Slow batches keep two, so a node
    does not hoard work and a crash re-sends little.
    """
    if batch_seconds is None or batch_seconds >= 0.05:
        return 2
    return min(max(math.ceil(PIPE_SECONDS / max(batch_seconds, 1e-6)), 4), 128)


def init_gives_up(failures: int, init_max_try: int) -> bool:
    """A node stops retrying init() after init_max_try failures for one job."""
    return failures >= init_max_try
