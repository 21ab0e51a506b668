"""A worker node: consumes mini-batches of every announced job and runs them in child pools.

`_finish` is the one place that decides ack vs requeue vs fail for a try; everything that runs
a batch only records its outcome. Every delivery leaves the node through `_settle` (and the
reporter behind it): after a try, refused, handed back or released.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from common.broker.base import Broker, Delivery, Settle, job_of
from common.errors import BatchfleetError
from common.messages import BatchMessage, EventKind, JobConfig, JobEvent, encode_report
from common.perf import PerfSampler
from common.policy import TryResult, extra_fate, keeps_packed, settle_for
from common.redact import redact
from common.rejections import Rejections
from common.signing import check_job_signature, seal_report, sign_tries
from common.storage import StorageOptions
from worker.commit.outputs import OutputSync
from worker.download.downloader import Downloader, Fetched, sweep_downloads
from worker.intake.admit import admit
from worker.intake.announcements import JobRefused, has_ended, load_job, read_announcement
from worker.intake.children import pool_config
from worker.intake.config import NodeConfig
from worker.intake.extras import PackedExtras
from worker.intake.gpus import process_count, warm_count
from worker.intake.layout import node_layout
from worker.intake.leave import leave_job, prune_caches
from worker.intake.membership import Membership
from worker.intake.prepare import prepare_job
from worker.intake.runtime import JobRuntime, planned_total
from worker.report.metrics import NodeMetrics
from worker.report.reporter import Outgoing, Reporter
from worker.report.results import try_result
from worker.run.environment import EnvironmentBuildError
from worker.run.pool import ChildPool, Task
from worker.run.standby import Standby

log = logging.getLogger(__name__)

STOP = "\0stop"  # a sink entry that is no queue's name
EXTRAS = "\0extras"  # a sink entry: sort the packed extras of the job in its body
PREPARED_WAIT = 600.0  # seconds a job announced "preparing" may take to become active
NOT_SERVED_FOR = 60.0  # seconds an announced job refused is not looked at again


class WorkerNode:
    """Serves jobs from a broker until stopped."""

    def __init__(self, broker: Broker, config: NodeConfig, standby: Standby | None = None, keep_warm: bool = False):
        self.broker = broker
        self.config = config
        self.standby = standby  # children's interpreters; kept filled (and stopped with the node) if keep_warm
        self.keep_warm = keep_warm and standby is not None
        self.options = config.storage_options or StorageOptions()
        # Jobs' folders go below one of this process's own: two nodes under one id never share a local
        # file either (the content-addressed caches stay shared, in the work root).
        self.session_root = config.work_root / config.session
        self.downloader = Downloader(self.session_root, self.options)
        self.sink: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._jobs: dict[str, JobRuntime] = {}
        self._preparing: dict[str, JobRuntime] = {}  # being prepared on their own threads (see serve)
        self._refused: set[str] = set()
        self._by_queue: dict[str, JobRuntime] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.metrics = NodeMetrics()
        self.rejections = Rejections(log, "the announcements")
        self._not_served: dict[str, float] = {}  # announced jobs refused (ended, outside our stores) -> until
        key = config.signing_key
        if key is not None:
            broker.tries_signer = lambda body, tries: sign_tries(key, body, tries)
        self.reporter = Reporter(broker, self._seal)
        self.membership = Membership(broker, config.node_id, config.session, config.host)

    # lifecycle

    def start(self, listen: bool = True) -> None:
        """Start dispatching; with `listen`, also serve jobs announced on the broker."""
        if not self.config.keep_work and sweep_downloads(self.config.work_root):
            log.info("removed download folders left by an earlier run in %s", self.config.work_root)
        prune_caches(self.config.work_root, [])
        self._warm_up(warm_count(self.config.processes, self.config.gpus))
        if listen:
            self.broker.subscribe_announcements(self.sink)
            self.membership.hello()  # coordinators answer with their running jobs' announcements
        for target, name in ((self._dispatch_loop, "bf-dispatch"), (self._heartbeat_loop, "bf-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking work; children finish or are killed; unsettled work returns to the broker."""
        self._stopping.set()
        for job_id in list(self._jobs):
            self.end(job_id, grace)
        self.sink.put(Delivery(queue=STOP, body=b"", attempt=1, tag=None))  # wakes the dispatcher now
        for thread in self._threads:
            thread.join(timeout=grace)
        self.reporter.close()
        self.downloader.close()
        if self.keep_warm and self.standby is not None:
            self.standby.close()
        if not self.config.keep_work:
            shutil.rmtree(self.session_root, ignore_errors=True)  # this process's own folder (see __init__)

    def kill_now(self) -> None:
        """Kill every child at once (second stop signal); the broker takes unsettled work back."""
        self._stopping.set()
        for runtime in list(self._jobs.values()):
            runtime.pool.kill_all()

    def _warm_up(self, count: int) -> None:
        if self.keep_warm and self.standby is not None and not self._stopping.is_set():
            self.standby.top_up(count)

    @property
    def jobs(self) -> list[str]:
        return list(self._jobs)

    # jobs

    def serve(self, job: JobConfig, go: bool = True) -> None:
        """Start a child pool and a consumer for a job (idempotent); without `go`, consume once
        the job is announced active. Preparing (code, environment build, side inputs) holds no lock."""
        with self._lock:
            taken = job.job_id in self._jobs or job.job_id in self._preparing or job.job_id in self._refused
            if taken or self._stopping.is_set() or self.membership.benched(job.job_id):  # benched: see membership
                return
            processes = process_count(self.config.processes, job.settings, self.config.gpus)
            layout = node_layout(job, self.config.work_root, self.config.session)
            runtime = JobRuntime(job, layout, None, processes)  # type: ignore[arg-type]
            runtime.extras = PackedExtras(partial(self.sink.put, Delivery(EXTRAS, job.job_id.encode(), 1, None)))
            if go:
                runtime.go.set()
            self._preparing[job.job_id] = runtime
        prepared, pool = False, None
        try:
            prepared = self._prepare(runtime)
        finally:
            with self._lock:
                del self._preparing[job.job_id]
                if prepared and not (runtime.ended or self._stopping.is_set()):
                    pool = runtime.pool = ChildPool(pool_config(runtime, self.config, self.options, self._finish,
                                                                self._init_failed, self.standby))  # fmt: skip
                    self._jobs[job.job_id] = runtime
                    self._by_queue[runtime.names.batches] = runtime
        if prepared and pool is None:  # the job ended (or the node stopped) while it was being prepared
            self._leave(runtime)
        if pool is None:
            return
        pool.start()
        self.metrics.job_started(job.job_id)
        self._event(runtime, "node_started", f"processes={processes} pid={os.getpid()}; {runtime.prepared.describe()}")
        threading.Thread(target=self._consume_when_ready, args=(runtime,), daemon=True).start()
        log.info("serving job %s with %d processes", job.job_id, processes)

    def _consume_when_ready(self, runtime: JobRuntime) -> None:
        """Take messages only once user code loaded and init() ran: a broken script costs no tries."""
        pool, since = runtime.pool, time.monotonic()
        while not (pool.ready.wait(0.2) and runtime.go.wait(0.2)):
            if pool.gave_up or runtime.ended or self._stopping.is_set():
                return
            if time.monotonic() - since > PREPARED_WAIT and not runtime.go.is_set():
                log.warning("job %s was never announced active; stopping its processes", runtime.job.job_id)
                threading.Thread(target=self.end, args=(runtime.job.job_id,), daemon=True).start()
                return
        with self._lock:
            if runtime.ended:
                return
            runtime.consumer_tag = self.broker.consume(runtime.names.batches, runtime.first_window(), self.sink)

    def _prepare(self, runtime: JobRuntime) -> bool:
        """Folders, code snapshot, environment, side inputs and output sync; a refused job is reported once."""
        job, layout = runtime.job, runtime.layout
        try:
            for folder in (layout.log_root, layout.output_dir, layout.working_dir):
                folder.mkdir(parents=True, exist_ok=True)
            check_job_signature(job, self.config.signing_key)
            runtime.prepared = prepare_job(job, layout, self.config.work_root, self.config.node_id,
                                           self.options, self.config.environment)  # fmt: skip
        except EnvironmentBuildError as exc:
            self._refused.add(job.job_id)
            log.error("job %s: %s", job.job_id, exc.line())
            self._event(runtime, "environment_failed", f"{exc.line()}\n{exc.tail}".strip())
            self._leave(runtime)  # the build log reaches the job's logs/sys/environment/
            return False
        except BatchfleetError as exc:
            self._refused.add(job.job_id)
            log.error("refusing job %s: %s", job.job_id, exc.line())
            self._event(runtime, "refused", exc.line())
            self._leave(runtime)
            return False
        if not layout.output_is_local:
            runtime.outputs = OutputSync(layout.output_dir, job.output_uri, self.options)
        if self.config.sample_perf:
            runtime.sampler = PerfSampler(self.config.node_id).start()
        return True

    def end(self, job_id: str, grace: float = 10.0) -> None:
        """Stop serving a job: running batches finish within `grace`, the rest go back to the queue."""
        with self._lock:
            if job_id in self._preparing:
                self._preparing[job_id].ended = True  # serve() leaves it once prepared
            runtime = self._jobs.pop(job_id, None)
            if runtime is None:
                return
            runtime.ended = True  # the dispatcher now holds this job's deliveries for the hand-back
        if runtime.consumer_tag is not None:
            self.broker.pause(runtime.consumer_tag)  # nothing new arrives while we finish and hand back
        runtime.pool.stop(grace)
        self.reporter.flush()  # finished batches are reported and acked before the rest go back
        runtime.fetchers.shutdown(wait=True, cancel_futures=True)
        self._hand_back(runtime)
        with self._lock:
            if self._by_queue.get(runtime.names.batches) is runtime:  # not a runtime served since
                del self._by_queue[runtime.names.batches]
        # An unsettled member keeps its whole pack from being acked, and a cancel would return it,
        # costing every member a try: so what the dispatcher held meanwhile goes back too, and
        # every hand-back is settled before the consumer goes.
        self._hand_back(runtime, final=True)
        self.reporter.flush()
        if runtime.consumer_tag is not None:
            self.broker.cancel(runtime.consumer_tag)
        self._leave(runtime)
        self._event(runtime, "node_stopped", "")
        self.metrics.job_ended(job_id)
        self._warm_up(warm_count(self.config.processes, self.config.gpus))
        log.info("stopped serving job %s", job_id)

    def _hand_back(self, runtime: JobRuntime, final: bool = False) -> None:
        """What this node took and did not finish goes back without costing a try: a stop is no failure."""
        waiting: list[Delivery] = []
        others: list[Delivery] = []
        while True:
            try:
                delivery = self.sink.get_nowait()
            except queue.Empty:
                break
            (waiting if delivery.queue == runtime.names.batches else others).append(delivery)
        for delivery in others:
            self.sink.put(delivery)
        left = [*runtime.take_held(close=final), *waiting]
        self._settle(runtime, left, "release", at_once=True)

    def _leave(self, runtime: JobRuntime) -> None:
        config = self.config
        leave_job(runtime, config.node_id, self.options, config.keep_work, config.secrets, config.session)
        in_use = [path for served in list(self._jobs.values()) for path in served.prepared.used]
        prune_caches(self.config.work_root, in_use)

    # dispatch

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                delivery = self.sink.get(timeout=0.5)
            except queue.Empty:
                continue
            if delivery.queue == STOP:
                return
            try:
                if delivery.queue == EXTRAS:
                    self._sort_extras(delivery.body.decode())
                elif delivery.queue == "announce":
                    self._on_announcement(delivery.body)
                else:
                    self._on_delivery(delivery)
            except Exception:
                log.exception("dispatch failed for a message on %s", delivery.queue)

    def _on_announcement(self, body: bytes) -> None:
        announcement = read_announcement(body, self.config.signing_key, self.rejections)
        if announcement is None or self._not_served.get(announcement.job_id, 0.0) > time.monotonic():
            return
        if self.membership.refuses_me(announcement):
            threading.Thread(target=self.end, args=(announcement.job_id,), daemon=True).start()
            return
        runtime = self._jobs.get(announcement.job_id) or self._preparing.get(announcement.job_id)
        if announcement.state == "ended":
            if runtime is not None:
                threading.Thread(target=self._end_if_ended, args=(runtime,), daemon=True).start()
            return
        if announcement.state == "refused":
            return  # about another node
        if runtime is not None:
            if announcement.state == "active":
                runtime.go.set()
            return
        try:
            job = load_job(announcement, self.config.store_roots, self.options)
        except JobRefused as exc:
            # Not asked again for a minute (announcements cost their sender nothing); a resumed job
            # clears its ended marker, so it is served again after that.
            if len(self._not_served) > 10_000:
                self._not_served.clear()
            self._not_served[announcement.job_id] = time.monotonic() + NOT_SERVED_FOR
            log.error("not serving job %s: %s", announcement.job_id, exc.line())
            return
        except BatchfleetError as exc:
            log.error("cannot serve job %s: %s", announcement.job_id, exc.line())
            return
        # An environment build can take minutes: the dispatcher goes on running the node's other jobs.
        name = f"bf-serve-{job.job_id}"
        threading.Thread(target=self.serve, args=(job, announcement.state == "active"), name=name, daemon=True).start()

    def _end_if_ended(self, runtime: JobRuntime) -> None:
        """Stop serving a job its area says has ended: a replayed "ended" for a resumed job (or, on an
        unsigned fleet, a forged one) finds no marker there, the coordinator's own end always does."""
        if has_ended(runtime.job, self.options):
            self.end(runtime.job.job_id)
        else:
            detail = f"job {runtime.job.job_id} has no ended marker in its area"
            self.rejections.drop("ended announcement of a running job", "an unknown sender", detail)

    def _seal(self, queue_name: str, body: bytes) -> bytes:
        """A reports-queue message signed for its job, when the node has the fleet's key."""
        key, job_id = self.config.signing_key, job_of(queue_name)
        return body if key is None or job_id is None else seal_report(key, job_id, body)

    def _on_delivery(self, delivery: Delivery) -> None:
        runtime = self._by_queue.get(delivery.queue)
        if runtime is None:
            return  # its consumer was cancelled; the broker has already taken the message back
        if runtime.ended:
            self._hold_or_release(runtime, delivery)  # end() hands it back
            return
        # Messages per mini-batch delivered: the broker window counts messages (see _tune_prefetch).
        runtime.message_share += 0.05 * (1.0 / delivery.members - runtime.message_share)
        message = admit(delivery, runtime.job, self.config.signing_key)
        if isinstance(message, str):
            self._settle(runtime, [delivery], "dead", message, at_once=True)
            return
        if runtime.extras and runtime.batch_seconds is not None:
            self._sort_extras(runtime.job.job_id)  # they came first: they run (or go back) first
        if delivery.packed and not keeps_packed(len(runtime.held), runtime.window, runtime.batch_seconds):
            if extra_fate(runtime.batch_seconds, 0.0) != "wait":
                self._settle(runtime, [delivery], "release")
            elif self._hold_or_release(runtime, delivery):
                runtime.extras.add(delivery, message)
            return
        if self._hold_or_release(runtime, delivery):
            self._start(runtime, delivery, message)

    def _sort_extras(self, job_id: str) -> None:
        """Run the packed extras whose batches proved fast, in their turn; hand back the others."""
        runtime = self._jobs.get(job_id)
        if runtime is None or not runtime.extras:
            return  # end() handed them back with the rest it held
        run, back = runtime.extras.sort(runtime.batch_seconds)
        for delivery, message in run:
            if not runtime.ended:
                self._start(runtime, delivery, message)
        back = [delivery for delivery in back if runtime.claim(delivery)]
        if back:
            self._settle(runtime, back, "release")

    def _start(self, runtime: JobRuntime, delivery: Delivery, message: BatchMessage) -> None:
        binding = runtime.job.inputs[message.input or runtime.job.input_data[0]]
        if self.downloader.needs_download(binding, message):
            runtime.fetchers.submit(self._fetch_guarded, runtime, delivery, message)
        else:
            self._fetch_guarded(runtime, delivery, message)

    def _hold_or_release(self, runtime: JobRuntime, delivery: Delivery) -> bool:
        """Hold a delivery; once end() has handed back what it held, release it here instead."""
        if runtime.hold(delivery):
            return True
        self._settle(runtime, [delivery], "release", at_once=True)
        return False

    def _fetch_guarded(self, runtime: JobRuntime, delivery: Delivery, message: BatchMessage) -> None:
        """A fetch that fails outright gives the delivery back (a try) rather than stranding it."""
        try:
            self._fetch_and_submit(runtime, delivery, message)
        except Exception:
            log.exception("batch %d of %s: fetching failed", message.batch_id, runtime.job.job_id)
            runtime.drop(delivery)
            self._settle(runtime, [delivery], "requeue", at_once=True)

    def _fetch_and_submit(self, runtime: JobRuntime, delivery: Delivery, message: BatchMessage) -> None:
        binding = runtime.job.inputs[message.input or runtime.job.input_data[0]]
        try:
            fetched: Fetched = self.downloader.fetch(runtime.job.job_id, binding, message, delivery.attempt)
        except BatchfleetError as exc:
            # A failed download is a failed try (requeued, counted), never items silently lost.
            task = Task(message.batch_id, delivery.attempt, {"total": len(message.items)}, delivery)
            outcome = {"status": "error", "error": f"download failed: {exc.line()}", "total": len(message.items),
                       "error_type": type(exc).__name__}  # fmt: skip
            self._finish(runtime, task, outcome, "downloader")
            return
        payload = {
            "batch_id": message.batch_id,
            "attempt": delivery.attempt,
            "total": planned_total(binding, message),
            "paths": fetched.paths,
            "tabular": binding.kind == "tabular",
            # Only table readers need the items; dumping ten file items costs more than their run().
            "items": [item.model_dump() for item in fetched.items] if binding.kind == "tabular" else [],
            "partition": message.partition,
            "input": binding.name,
            "missing": fetched.missing,
            "missing_error": fetched.missing_error,
        }
        task = Task(message.batch_id, delivery.attempt, payload, delivery, fetched.seconds, cleanup=fetched.cleanup)
        runtime.pool.submit(task)

    # outcomes: the one place that decides, and the one path that settles

    def _finish(self, runtime: JobRuntime, task: Task, outcome: dict[str, Any], process: str) -> None:
        kind: TryResult = "committed" if outcome.get("status") == "committed" else "error"
        action, reported = settle_for(kind, task.attempt, runtime.job.settings.run_max_try)
        report = try_result(runtime.job.job_id, self.config.node_id, task, outcome, process, reported,
                            self.config.secrets)  # fmt: skip
        try:
            if runtime.outputs is not None and kind == "committed":
                runtime.outputs.push()  # user files land before the batch counts as done
        except BatchfleetError as exc:
            log.warning("could not upload outputs of batch %d: %s", task.batch_id, exc.line())
            action = "requeue"
        self.metrics.observe(report)
        if kind == "committed":
            # Only a try that ran to its end tells how long a batch takes. A child killed or a batch
            # that raised right after it started would pass for a fast batch: the node would deepen
            # its window (which never shrinks) and hoard the queue other nodes should share.
            # The pace is the work (download, run, commit), not the try's wall time: that includes
            # the wait in the child's outbox and pipe, which deeper pipes lengthen, so sub-ms batches
            # measured ~2 ms and kept 8-deep pipes.
            self._tune_prefetch(runtime, report.download_seconds + report.run_seconds + report.commit_seconds)
        self._settle(runtime, [task.delivery], action, report=encode_report(report),
                     after=lambda: self._done(runtime, task))  # fmt: skip

    def _settle(
        self,
        runtime: JobRuntime,
        deliveries: Sequence[Delivery | None],
        action: Settle,
        reason: str | None = None,
        report: bytes = b"",
        after: Callable[[], None] | None = None,
        at_once: bool = False,
    ) -> None:
        """The one way a delivery leaves this node. With a report, it is settled once the report is
        confirmed (on the reporter's thread); `at_once` settles reportless ones in this thread."""
        items = [Outgoing(runtime.names.reports, report, d, action, after, reason) for d in deliveries]
        if at_once:
            self.reporter.settle_now(items)
        else:
            for item in items:
                self.reporter.put(item)

    def _tune_prefetch(self, runtime: JobRuntime, seconds: float) -> None:
        """Follow the batches' pace: the window deepens once batches prove fast; extras waiting for the
        pace are sorted (first: the wake-up goes ahead of the packs a wider window brings)."""
        wanted = runtime.note_pace(seconds)
        if runtime.extras:
            runtime.extras.wake()
        if wanted is not None and runtime.consumer_tag is not None:
            try:
                self.broker.set_prefetch(runtime.consumer_tag, wanted)
            except BatchfleetError as exc:
                log.debug("prefetch unchanged: %s", exc.line())

    @staticmethod
    def _done(runtime: JobRuntime, task: Task) -> None:
        """After the report went out and the delivery was settled."""
        if task.delivery is not None:
            runtime.drop(task.delivery)
        if task.cleanup is not None:
            task.cleanup()

    def _init_failed(self, runtime: JobRuntime, line: str, tb: str) -> None:
        log.error(
            "job %s: init() failed %d times; giving up on this node: %s",
            runtime.job.job_id,
            runtime.job.settings.init_max_try,
            line,
        )
        self._event(runtime, "init_failed", f"{line}\n{tb}".strip())
        with self._lock:
            self._by_queue.pop(runtime.names.batches, None)
        if runtime.consumer_tag is not None:
            self.broker.cancel(runtime.consumer_tag)  # unsettled deliveries go back to the queue
        runtime.pool.drain()

    def _event(self, runtime: JobRuntime, kind: EventKind, detail: str) -> None:
        detail = redact(detail, self.config.secrets) if kind in ("init_failed", "refused") else detail
        event = JobEvent(job_id=runtime.job.job_id, node_id=self.config.node_id, kind=kind, detail=detail,
                         at=time.time(), session=self.config.session, host=self.config.host)  # fmt: skip
        try:
            self.broker.publish(runtime.names.reports, [self._seal(runtime.names.reports, encode_report(event))])
        except BatchfleetError as exc:
            log.warning("could not send %s for job %s: %s", kind, runtime.job.job_id, exc.line())

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.config.heartbeat_interval):
            self.metrics.prune()
            for runtime in list(self._jobs.values()):
                if runtime.pool.gave_up:
                    continue  # dropped from the job (init() failed): the coordinator counts on the others
                self._event(runtime, "heartbeat", f"busy={runtime.pool.busy}")
                if self.metrics.enabled:
                    try:
                        self.metrics.depth(runtime.job.job_id, self.broker.depth(runtime.names.batches))
                    except BatchfleetError as exc:
                        log.debug("queue depth unavailable: %s", exc.line())
