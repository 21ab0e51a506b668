"""What one worker node holds for one job, and what a planned batch stands for."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from common.broker.base import Delivery, queue_names
from common.messages import BatchMessage, InputBinding, JobConfig
from common.perf import PerfSampler
from common.policy import messages_window, prefetch_for
from worker.commit.outputs import OutputSync
from worker.intake.extras import PackedExtras
from worker.intake.layout import NodeLayout
from worker.intake.prepare import Prepared
from worker.run.pool import ChildPool


class JobRuntime:
    """Everything one node holds for one job."""

    def __init__(self, job: JobConfig, layout: NodeLayout, pool: ChildPool, processes: int) -> None:
        self.job = job
        self.layout = layout
        self.pool = pool
        self.processes = processes
        self.names = queue_names(job.job_id)
        self.consumer_tag: str | None = None
        self.outputs: OutputSync | None = None
        self.window = 0  # mini-batches this node should hold (policy.prefetch_for)
        self.prefetch = 0  # broker messages it may hold unsettled (policy.messages_window)
        # Moving average of 1 / (mini-batches in a delivery's message): hand-backs and retries
        # travel alone, so packs are not always full.
        self.message_share = 1.0 / job.batches_per_message
        self.batch_seconds: float | None = None  # moving average, sets the prefetch window
        self.finished = 0
        self.sampler: PerfSampler | None = None
        self.fetchers = ThreadPoolExecutor(max_workers=2 * processes + 1, thread_name_prefix="bf-fetch")
        self.ended = False
        self.held: dict[int, Delivery] = {}  # taken from the broker, not settled yet (by id)
        self.held_lock = threading.Lock()
        self.closed = False  # the final hand-back was taken (see take_held)
        self.go = threading.Event()  # the plan is published: take messages (see JobAnnouncement)
        self.prepared = Prepared(args=list(job.args))  # code, environment, side inputs (intake/prepare.py)
        self.extras = PackedExtras(lambda: None)  # held beyond the window, waiting for the pace (intake/extras.py)

    def first_window(self) -> int:
        """The broker prefetch while no batch has finished yet (the pace unknown)."""
        self.window = prefetch_for(self.processes, None)
        self.prefetch = messages_window(self.window, self.job.batches_per_message, None)
        return self.prefetch

    def note_pace(self, seconds: float) -> int | None:
        """Fold a finished batch's seconds into the pace; the broker prefetch to ask for when the window
        should grow (checked after each of the first 16 batches, then every 16th)."""
        avg = self.batch_seconds
        self.batch_seconds = seconds if avg is None else 0.8 * avg + 0.2 * seconds
        self.finished += 1
        if (self.finished > 16 and self.finished % 16) or self.consumer_tag is None:
            return None
        self.window = prefetch_for(self.processes, self.batch_seconds)
        per_message = min(self.job.batches_per_message, max(1, round(1.0 / self.message_share)))
        wanted = messages_window(self.window, per_message, self.batch_seconds)
        if wanted <= self.prefetch:  # a broker's window only grows (see Broker.set_prefetch)
            return None
        self.prefetch = wanted
        return wanted

    def hold(self, delivery: Delivery) -> bool:
        """Note a delivery as taken; False once the hand-back is closed (the caller releases it)."""
        with self.held_lock:
            if self.closed:
                return False
            self.held[id(delivery)] = delivery
            return True

    def drop(self, delivery: Delivery) -> None:
        with self.held_lock:
            self.held.pop(id(delivery), None)

    def claim(self, delivery: Delivery) -> bool:
        """Take a held delivery out of the hand-back; False when end() has already taken it."""
        with self.held_lock:
            return self.held.pop(id(delivery), None) is not None

    def take_held(self, close: bool = False) -> list[Delivery]:
        """What is held, to hand back; with `close`, nothing can be held after it."""
        with self.held_lock:
            left, self.held = list(self.held.values()), {}
            self.closed = self.closed or close
        return left


def planned_total(binding: InputBinding, message: BatchMessage) -> int:
    """Items a batch stands for before it is read: files, or rows of a table. A CSV or JSON Lines
    range has no row count in the plan; it counts as one item, so a crash or timeout before
    run() returns still fails items (the child replaces the estimate once it has read the rows)."""
    if binding.kind != "tabular":
        return len(message.items)
    return sum(item.rows if item.rows is not None else 1 for item in message.items)
