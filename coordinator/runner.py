"""Run one job: submit, follow, decide, merge, report. Embedded or against a fleet."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from common.broker.base import Broker, Delivery, queue_names
from common.errors import BatchfleetError, StorageError, UsageError
from common.jobarea import JobArea
from common.messages import BatchResult, JobAnnouncement, JobConfig, JobEvent
from common.perf import PerfSampler
from common.rejections import Rejections
from common.settings import RunSettings
from common.signing import sign_announcement, sign_job
from common.storage import StorageOptions, is_remote, open_storage
from common.storage.outage import wait_out
from coordinator.follow.follower import Follower, Verdict, await_nodes_stopped
from coordinator.follow.gate import ReportGate
from coordinator.follow.tally import Tally
from coordinator.merger import StreamMerger
from coordinator.plan.feed import PlanFeeder
from coordinator.plan.snapshot import snapshot_code
from coordinator.plan.submit import (
    FLEET_BATCHES_PER_MESSAGE,
    StreamPublisher,
    mark_published,
    new_job_id,
    new_manifest,
    write_job,
    write_plan,
)
from coordinator.report.digest import TryDigest
from coordinator.report.joblogs import Summary, summarize
from coordinator.report.live import LiveLogs
from coordinator.report.progress import Progress
from coordinator.report.state import cancel_requested, snapshot, write_snapshot
from coordinator.report.trylog import TryLog
from coordinator.report.write import ReportRenderer, write_html, write_job_logs, write_perf
from coordinator.scratch import sweep_scratch
from coordinator.spec.environment import check_buildable

if TYPE_CHECKING:
    from common.storage.prelist import Prelisted
    from coordinator.embedded import EmbeddedNode, Standby
    from coordinator.spec.loader import JobSpec, Resolved

log = logging.getLogger(__name__)

HELLO_SPACING = 0.5  # seconds between announcements answering workers' hellos


@dataclass
class RunOptions:
    store_uri: str
    broker: Broker
    embedded: bool = True
    storage_options: StorageOptions = field(default_factory=StorageOptions)
    progress: bool = True
    node_id: str = "local"
    work_root: Path | None = None
    announce_every: float = 5.0
    signing_key: bytes | None = None
    node_wait: float = 30.0
    fresh_snapshot: str | None = None  # digest of a code snapshot build_job stored (not in the store before)
    insecure: bool = False  # a fleet without a signing key (--insecure): said in every job's report
    secrets: tuple[str, ...] = ()  # masked in every file a job writes (keys, passwords, tokens)
    standby: Standby | None = None  # embedded: interpreters started ahead for the node's children
    prelisted: Prelisted | None = None  # local input folders whose listing started ahead


def build_job(spec: JobSpec, resolved: Resolved, options: RunOptions) -> JobConfig:
    """The resolved job; in fleet mode the code is snapshotted into the store."""
    job_id = new_job_id(spec.name)
    area = JobArea.of(options.store_uri, job_id).root
    code_uri, digest = str(spec.code_dir), ""
    if not options.embedded:
        # Bound data inside the code folder (and a local store) never travels with the code.
        bound = [b.uri for b in resolved.inputs.values() if b.kind != "value"]
        bound += [*resolved.outputs.values(), resolved.output_uri, options.store_uri]
        limit = resolved.settings.snapshot_limit
        code_uri, digest, selection = snapshot_code(
            spec.code_dir, options.store_uri, options.storage_options, bound, limit
        )
        options.fresh_snapshot = digest if selection.uploaded else None
    mode = environment_mode(resolved.settings, options.embedded)
    if mode == "job":
        check_buildable(spec.python_env, spec.spec_path.name)
    job = JobConfig(
        job_id=job_id,
        name=spec.name,
        created_at=time.time(),
        code_uri=code_uri,
        code_hash=digest,
        entry_script=spec.entry_script,
        args=resolved.args,
        inputs=resolved.inputs,
        input_data=spec.input_data,
        outputs=resolved.outputs,
        output_data=spec.output_data,
        output_uri=resolved.output_uri,
        store_uri=area,
        settings=resolved.settings.model_copy(update={"environment": mode}),
        environment=spec.environment,
        python_env=spec.python_env,
        environment_variables=spec.environment_variables,
        batches_per_message=1 if options.embedded else FLEET_BATCHES_PER_MESSAGE,
    )
    return sign_job(options.signing_key, job) if options.signing_key else job


def environment_mode(settings: RunSettings, embedded: bool) -> str:
    """'job' builds the spec's environment on each worker; embedded runs default to the current Python."""
    return settings.environment or ("current" if embedded else "job")


def check_output(job: JobConfig, options: StorageOptions) -> None:
    try:
        open_storage(job.output_uri, options).check_writable(job.output_uri)
    except StorageError as exc:
        raise UsageError(f"output {job.output_data}: {exc.message}", "pass a writable --output location") from exc


class JobRun:
    """One submitted job followed to its end."""

    def __init__(self, job: JobConfig, options: RunOptions) -> None:
        self.job = job
        self.options = options
        self.cancelled = threading.Event()
        self.started = time.time()
        self.overview: list[str] = []
        self.node: EmbeddedNode | None = None
        self._announcing = threading.Event()
        self._workers_started = False
        self._announced = False
        self.digest = TryDigest(origin=self.started)
        self.trylog: TryLog | None = None
        self.feeder: PlanFeeder | None = None
        self._queues_deleted: Future[None] | None = None
        sweep_scratch()  # what coordinators killed mid-job left in the temp folder
        if not is_remote(job.store_uri):
            sweep_scratch(Path(job.store_uri))  # and in a resumed job's area (its plan manifest)
        self.rejections = Rejections(log, f"the queues of job {job.job_id}")

    def new_tally(self, batches: int) -> Tally:
        """The job's tally, its tries streamed to attempts.csv and folded into the report's digest."""
        tally = Tally(batches)
        self.trylog = TryLog(tally.tries_of)
        tally.watch(self.digest.add)
        tally.watch(self.trylog.add, self.trylog.reused)
        return tally

    def submit(self) -> tuple[int, int]:
        """Store the job, plan it and publish the plan; returns (batches, items)."""
        self.prepare()
        return self.publish()

    def prepare(self) -> None:
        opts = self.options
        check_output(self.job, opts.storage_options)
        write_job(self.job, opts.storage_options)
        opts.broker.declare_job(self.job.job_id, self.job.settings.run_max_try)

    def publish(self) -> tuple[int, int]:
        opts = self.options
        names = queue_names(self.job.job_id)
        began = time.perf_counter()
        if opts.embedded:
            # The in-memory queue is fed from the manifest as it drains (plan/feed.py): planning
            # goes on at disk speed, and the plan is never held in memory whole.
            manifest = new_manifest(self.job.store_uri)
            self.feeder = PlanFeeder(opts.broker, names.batches, manifest)
            try:
                manifest, batches, items = write_plan(
                    self.job, opts.storage_options, opts.signing_key, self.feeder, manifest, opts.prelisted
                )
            except BaseException:
                self.stop_feeding()
                raise
            planned = time.perf_counter() - began
            self.feeder.planned()
        else:
            # Over the network, planning must not wait for confirms chunk by chunk.
            stream = StreamPublisher(opts.broker, names.batches, self.job.batches_per_message)

            def sink(chunk: list[bytes]) -> None:
                stream(chunk)
                self.start_workers()  # workers take the first mini-batches while the rest is listed

            try:
                manifest, batches, items = write_plan(
                    self.job, opts.storage_options, opts.signing_key, sink, prelisted=opts.prelisted
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.close()
                raise
            planned = time.perf_counter() - began
            stream.close()
            shutil.rmtree(manifest.parent, ignore_errors=True)  # the store keeps the plan
        if opts.prelisted is not None:
            opts.prelisted.close()  # a listing the plan did not take (a table, a partitioned input)
        # Listing and planning; a fleet's plan is then on RabbitMQ once the broker confirmed it all.
        confirmed = "" if opts.embedded else f", confirmed by the broker after {time.perf_counter() - began:.2f} s"
        log.info("planned %d mini-batches (%d items) for %s in %.2f s%s",
                 batches, items, self.job.job_id, planned, confirmed)  # fmt: skip
        mark_published(self.job, opts.storage_options)
        return batches, items

    def stop_feeding(self) -> None:
        """Embedded mode: stop feeding the queue from the manifest, and remove it (the store keeps the plan)."""
        feeder, self.feeder = self.feeder, None
        if feeder is not None:
            feeder.close()
            shutil.rmtree(feeder.manifest.parent, ignore_errors=True)

    def start_workers(self) -> None:
        opts = self.options
        if self._workers_started:
            return
        self._workers_started = True
        if opts.embedded:
            from coordinator.embedded import start_node  # embedded only: a fleet's coordinator runs no node

            self.node = start_node(
                opts.broker, self.job, opts.node_id, opts.work_root, opts.signing_key, opts.secrets, opts.standby
            )
        else:
            threading.Thread(target=self._announce_loop, name="bf-announce", daemon=True).start()

    def announcement(
        self,
        state: Literal["preparing", "active", "ended", "refused"],
        node_id: str | None = None,
        session: str | None = None,
        detail: str = "",
    ) -> bytes:
        """The job's announcement (with node_id and session, the node refused and why), signed with the
        fleet's key when there is one: the refused node, its session and the reason are signed too."""
        uri, key, job_id = JobArea(self.job.store_uri).job_file, self.options.signing_key, self.job.job_id
        sig = None
        if key is not None:
            sig = sign_announcement(key, job_id, uri, state, refused=(node_id or "", session or "", detail))
        body = JobAnnouncement(
            job_id=job_id, job_uri=uri, state=state, node_id=node_id, session=session, detail=detail, sig=sig
        )
        return body.model_dump_json(exclude_none=True).encode()

    def announce(
        self,
        state: Literal["preparing", "active", "ended", "refused"],
        node_id: str | None = None,
        session: str | None = None,
        detail: str = "",
    ) -> None:
        """Tell every worker about the job once (with node_id and session, the node refused and why);
        a broker error is logged, not raised."""
        try:
            self.options.broker.announce(self.announcement(state, node_id, session, detail))
            self._announced = True
        except Exception as exc:  # the broker reconnects; the announce loop repeats "active"
            log.warning("could not announce job %s: %s", self.job.job_id, exc)

    def _refuse(self, event: JobEvent, line: str) -> None:
        """A second live node under one node id: tell that node (by its session) to leave the job."""
        self.overview.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")
        self.announce("refused", node_id=event.node_id, session=event.session, detail=line)

    def _announce_loop(self) -> None:
        """Announce the job every announce_every seconds, and at once when a worker says hello: a worker
        started mid-job joins in well under a second instead of waiting for the next announcement."""
        hellos: queue.Queue[Delivery] = queue.Queue()
        tag: str | None = None
        # "active" first: workers that made ready on "preparing" start on the plan now, not after the
        # round trips of a first subscription (a new connection, while planning holds the GIL). A
        # worker starting in between is answered by the next announcement.
        self.announce("active")
        try:
            tag = self.options.broker.subscribe_announcements(hellos, topic="hello")
        except BatchfleetError as exc:
            log.warning("job %s: not listening for workers' hellos (%s)", self.job.job_id, exc.line())
        try:
            while not self._announcing.is_set():
                self._await_hello(hellos)
                if not self._announcing.is_set():
                    self.announce("active")  # again and again: workers may start (or restart) any time
        finally:
            if tag is not None:
                with contextlib.suppress(BatchfleetError):
                    self.options.broker.cancel(tag)

    def _await_hello(self, hellos: queue.Queue[Delivery]) -> None:
        """Return after announce_every seconds, at a stop, or on a hello (all waiting ones answered at once,
        and no more often than every HELLO_SPACING seconds, whoever publishes them)."""
        deadline = time.monotonic() + self.options.announce_every
        earliest = time.monotonic() + HELLO_SPACING
        while not self._announcing.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                hellos.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            with contextlib.suppress(queue.Empty):
                while True:
                    hellos.get_nowait()
            self._announcing.wait(max(earliest - time.monotonic(), 0))
            return

    def follow(self, tally: Tally) -> Verdict:
        progress = Progress(tally.batches_total, self.started, enabled=self.options.progress, overview=self.overview)
        assert self.trylog is not None, "the tally comes from new_tally()"
        live = LiveLogs(self.job, self.started, self.overview, self.options.storage_options, self.trylog)
        last_write = [0.0]

        def on_change(current: Tally) -> None:
            progress.update(current)
            now = time.time()
            if now - last_write[0] >= 2.0:
                last_write[0] = now
                self._checkpoint(current)
                live.update(current, now)

        follower = Follower(
            self.options.broker,
            self.job,
            tally,
            on_change,
            self.cancelled,
            self._record_failure,
            self.options.signing_key,
            # A fleet node started later joins at the next announcement; embedded mode has one node.
            node_grace=0.0 if self.options.embedded else 2 * self.options.announce_every + 5,
            rejections=self.rejections,
            secrets=self.options.secrets,
            on_refuse=self._refuse,
        )
        try:
            return follower.follow()
        except KeyboardInterrupt:
            return Verdict("cancelled", "interrupted (Ctrl-C)")
        finally:
            progress.close(tally)

    def _record_failure(self, result: BatchResult) -> None:
        """Failed batches are kept in the store so a restarted coordinator does not wait for them."""
        uri = JobArea(self.job.store_uri).failed_record(result.batch_id)
        try:
            open_storage(uri, self.options.storage_options).write_bytes(uri, result.model_dump_json().encode())
        except BatchfleetError as exc:
            log.warning("could not record failed batch %d: %s", result.batch_id, exc.line())

    def _checkpoint(self, tally: Tally) -> None:
        """Live state for `status`; and a cancel request from `batchfleet cancel`."""
        opts = self.options.storage_options
        try:
            write_snapshot(self.job, snapshot(self.job, tally, self.digest, self.started, "running"), opts)
            if cancel_requested(self.job, opts):
                self.cancelled.set()
        except BatchfleetError as exc:
            log.warning("could not update the state of %s: %s", self.job.job_id, exc.line())

    def mark_ended(self) -> None:
        """The ended marker: no worker serves the job again, whatever is announced (until `resume`)."""
        uri = JobArea(self.job.store_uri).ended
        try:
            open_storage(uri, self.options.storage_options).write_bytes(uri, b"1")
        except BatchfleetError as exc:
            log.warning("could not mark job %s ended: %s", self.job.job_id, exc.line())

    def abort(self) -> None:
        """Planning failed: stop what was started, leave nothing behind."""
        self._announcing.set()
        self.stop_feeding()
        self.mark_ended()
        if self.trylog is not None:
            self.trylog.discard()
        if self._announced:
            self.announce("ended")  # workers that started processes for it stop them
        if self.node is not None:
            self.node.stop(grace=0)
        try:
            self.options.broker.delete_job(self.job.job_id)
        except BatchfleetError as exc:
            log.warning("could not delete the queues of %s: %s", self.job.job_id, exc.line())

    def stop_workers(self, tally: Tally) -> None:
        """Tell every worker the job ended; wait (bounded) until they have uploaded their logs."""
        self._announcing.set()
        self.stop_feeding()
        self.mark_ended()
        broker = self.options.broker
        names = queue_names(self.job.job_id)
        broker.purge(names.batches)
        if self.node is not None:
            self.node.stop()
            return
        broker.announce(self.announcement("ended"))
        gate = ReportGate(
            self.job, self.options.signing_key, tally.batches_total, self.rejections, self.options.secrets
        )
        silent = await_nodes_stopped(broker, self.job, tally.live_nodes(), self.options.node_wait, gate)
        if silent:
            log.warning("job %s: no goodbye from %s; their logs may be incomplete", self.job.job_id, sorted(silent))
        # Deleting quorum queues takes RabbitMQ tens of milliseconds: it goes on while the logs and
        # the report are written, and the job ends once both are done (await_queues_deleted).
        deleter = ThreadPoolExecutor(1, thread_name_prefix="bf-delete-queues")
        self._queues_deleted = deleter.submit(broker.delete_job, self.job.job_id)
        deleter.shutdown(wait=False)

    def await_queues_deleted(self) -> None:
        """Wait for the deletion stop_workers started; raise what it raised."""
        if self._queues_deleted is not None:
            self._queues_deleted.result()


def run_job(spec: JobSpec, resolved: Resolved, options: RunOptions) -> Summary:
    """Submit and follow a job to its end; returns its summary (state may be failed)."""
    job = build_job(spec, resolved, options)
    run = JobRun(job, options)
    try:
        run.prepare()
        if options.embedded:
            # Children start (and init) while the input is listed and planned.
            run.start_workers()
        else:
            # Workers start their processes (and init()) now, and take messages once the first
            # chunk of the plan is on its way (the announcements turn "active").
            run.announce("preparing")
            options.broker.connect_consumers()  # the follower's connection opens while the plan is sent
        batches, items = run.publish()
    except BaseException:
        run.abort()
        raise
    log.info("job %s: %d mini-batches, %d items", job.job_id, batches, items)
    return finish_job(run, run.new_tally(batches), items)


def finish_job(run: JobRun, tally: Tally, items: int) -> Summary:
    """Follow to the end (merging as parts come), then report and record the state."""
    job, options = run.job, run.options
    assert run.trylog is not None, "the tally comes from run.new_tally()"
    renderer = ReportRenderer()
    sampler = PerfSampler(options.node_id if options.embedded else "coordinator").start()
    merger = (
        StreamMerger(job, tally, options.storage_options).start()
        if job.settings.output_action == "append_row"
        else None
    )
    run.start_workers()
    merged: tuple[str, int] | None = None
    merge_error: str | None = None
    try:
        verdict = run.follow(tally)
        if merger is not None and verdict.state == "succeeded":
            merged, merge_error = _finish_merge(job, merger)
        perf = sampler.stop()
        summary = summarize(job, tally, verdict.state, verdict.reason, run.started, items)
        summary.unsigned = options.insecure
        summary.rejected = run.rejections.counts()
        merged_into(summary, merged, merge_error)
        renderer.request(job, run.digest, summary.as_dict(), perf)  # rendered while the workers stop
    finally:
        if merger is not None:
            merger.finish(keep=False)  # after an error: the unfinished file goes
        log.info("job %s: decided after %.2fs; stopping workers", job.job_id, time.time() - run.started)
        run.stop_workers(tally)
    if summary.rejected != run.rejections.counts():  # reports refused while the nodes said goodbye
        summary.rejected = run.rejections.counts()
        renderer.request(job, run.digest, summary.as_dict(), perf)
    trylog, html, store = run.trylog, renderer.result(), options.storage_options
    wait_out(lambda: write_job_logs(job, tally, run.digest, trylog, summary, run.overview, store), "writing the logs")
    wait_out(lambda: write_perf(job, sampler.node_id, perf, store), "writing the resource usage")
    wait_out(lambda: write_html(job, html, store), "writing the report")
    run.await_queues_deleted()
    log.info("job %s: finished after %.2fs", job.job_id, time.time() - run.started)
    return summary


def merged_into(summary: Summary, merged: tuple[str, int] | None, error: str | None) -> None:
    """The summary names the merged file, or fails the job when merging it failed."""
    if error is not None:
        summary.state, summary.reason = "failed", f"merging the output failed: {error}"
    elif merged is not None:
        summary.output, summary.rows = merged


def _finish_merge(job: JobConfig, merger: StreamMerger) -> tuple[tuple[str, int] | None, str | None]:
    """The merged output, or why merging it failed (which fails the job, with the reason in its logs)."""
    try:
        return merger.finish(keep=True), None
    except BatchfleetError as exc:
        log.error("job %s: merging the output failed: %s", job.job_id, exc.line())
        return None, exc.line()


def default_store() -> str:
    """BATCHFLEET_STORE, else .batchfleet/ in the current folder (absolute)."""
    return os.environ.get("BATCHFLEET_STORE") or str(Path(".batchfleet").resolve())
