"""Follow a running job: fold reports and dead letters, decide when it ends and why."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from common.broker.base import Broker, Delivery, queue_names
from common.errors import BrokerError
from common.messages import BatchMessage, BatchResult, JobConfig, JobEvent
from common.policy import is_stalled, threshold_breach
from common.rejections import Rejections, describe
from coordinator.follow.gate import ReportGate
from coordinator.follow.nodes import NodeRegistry
from coordinator.follow.settle import settle
from coordinator.follow.tally import Tally

log = logging.getLogger(__name__)

DRAIN = 500  # deliveries folded, and acked together, per wake-up (the consumers' prefetch)
DEAD_GRACE = 1.0  # seconds a dead letter waits for reports published before it (see _fail_dead_letters)
DEAD_CAP = 10.0  # ... and at most this long, should reports never stop flowing
SILENT_AFTER = 15.0  # three missed heartbeats at the workers' default 5s: the node is gone, stop waiting


@dataclass
class _Parked:
    """A dead letter not yet acted on: its batch fails, and it is acked, once reports are read."""

    message: BatchMessage
    delivery: Delivery
    since: float


@dataclass
class Verdict:
    state: str  # "succeeded" | "failed" | "cancelled"
    reason: str | None = None


def _genuine(key: bytes, job_id: str, message: BatchMessage) -> bool:
    from common.signing import SignatureError, verify_batch

    try:
        verify_batch(key, job_id, message)
    except SignatureError:
        return False
    return True


def _refusal_kind(reason: str) -> str:
    """The kind of a message a worker refused, from its reason (see worker/intake/admit.py)."""
    for word in ("unsigned", "forged", "another job", "unparseable", "malformed", "names no input"):
        if word in reason:
            return f"batch message refused as {word}"
    return "batch message refused"


class Follower:
    """Consumes the job's reports and dead queues until the job is decided."""

    def __init__(
        self,
        broker: Broker,
        job: JobConfig,
        tally: Tally,
        on_change: Callable[[Tally], None] | None = None,
        cancelled: threading.Event | None = None,
        on_failed: Callable[[BatchResult], None] | None = None,
        signing_key: bytes | None = None,
        node_grace: float = 0.0,
        rejections: Rejections | None = None,
        secrets: tuple[str, ...] = (),
        on_refuse: Callable[[JobEvent, str], None] | None = None,
    ) -> None:
        self.broker = broker
        self.job = job
        self.tally = tally
        self.on_change = on_change
        self.cancelled = cancelled or threading.Event()
        self.on_failed = on_failed
        self.signing_key = signing_key
        self.names = queue_names(job.job_id)
        self.sink: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._tags: list[str] = []
        self._parked: dict[int, _Parked] = {}
        # Every node dropped (init() failed): since when, and why. A fleet waits node_grace seconds
        # for another node (one started later joins at the next announcement); embedded mode has one.
        self.node_grace = node_grace
        self._orphaned: tuple[float, str] | None = None
        self.rejections = rejections or Rejections(log, f"the queues of job {job.job_id}")
        self.gate = ReportGate(job, signing_key, tally.batches_total, self.rejections, secrets)
        self.nodes = NodeRegistry()  # one live session per node id (coordinator/follow/nodes.py)
        self.on_refuse = on_refuse

    def follow(self) -> Verdict:
        """Block until every batch is resolved, a threshold breaks, init fails, it stalls or is cancelled."""
        self._tags = [self.broker.consume(name, 500, self.sink) for name in (self.names.reports, self.names.dead)]
        try:
            verdict = self._loop()
            self._fail_dead_letters(final=True)  # a job that ends anyway counts them
            return verdict
        finally:
            for tag in self._tags:
                self.broker.cancel(tag)

    def _loop(self) -> Verdict:
        settings = self.job.settings
        stall = settings.stall_timeout()
        last_tick = 0.0
        while not self.tally.finished:
            if self.cancelled.is_set():
                return Verdict("cancelled", "cancelled by request")
            verdict = self._handle_all(self._take(0.2))
            if verdict is not None:
                return verdict
            self._fail_dead_letters()
            if self._orphaned is not None and self._no_node_left():
                return Verdict("failed", self._orphaned[1])
            reason = threshold_breach(self.tally.counts(), settings)
            if reason is not None:
                return Verdict("failed", self._with_first_error(reason))
            now = time.time()
            if is_stalled(now, self.tally.last_sign_of_work(), self.tally.busy(now, stall / 3 + 10), stall):
                return Verdict("failed", self._stall_reason(stall))
            if self.on_change is not None and now - last_tick >= 0.25:
                last_tick = now
                self.on_change(self.tally)
        return Verdict("succeeded")

    def _take(self, timeout: float) -> list[Delivery]:
        """Whatever has arrived, up to DRAIN deliveries, waiting at most `timeout` for the first."""
        try:
            taken = [self.sink.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(taken) < DRAIN:
            try:
                taken.append(self.sink.get_nowait())
            except queue.Empty:
                break
        return taken

    def _handle_all(self, deliveries: list[Delivery]) -> Verdict | None:
        """Fold deliveries in order until one decides the job; ack the ones folded in one call
        (the rest stay unacked and return to the queue when the consumers are cancelled)."""
        verdict: Verdict | None = None
        handled = 0
        parked: set[int] = set()  # dead letters acked only once acted on (see _fail_dead_letters)
        try:
            for delivery in deliveries:
                handled += 1
                if delivery.queue == self.names.dead:
                    if self._dead(delivery):
                        parked.add(id(delivery))
                    continue
                verdict = self._handle(delivery)
                if verdict is not None or self.tally.finished:
                    break
        finally:
            settle(self.broker, [d for d in deliveries[:handled] if id(d) not in parked])
        return verdict

    def _handle(self, delivery: Delivery) -> Verdict | None:
        verdict: Verdict | None = None
        for report in self.gate.reports(delivery.body):
            if isinstance(report, BatchResult):
                self._apply(report)
            elif verdict is None:
                verdict = self._event(report)
        return verdict

    def _event(self, event: JobEvent) -> Verdict | None:
        admission = self.nodes.check(event)
        if admission.refusal is not None:
            log.error("job %s: %s", self.job.job_id, admission.refusal)
            if self.on_refuse is not None:
                self.on_refuse(event, admission.refusal)
        if not admission.counts:
            return None  # a second node under a live node's id: none of its news is about that node
        if event.kind == "heartbeat":
            busy = int(event.detail.partition("busy=")[2] or 0)
            self.tally.heartbeat(event.node_id, busy)
        elif event.kind == "init_failed":
            return self._init_failed(event)
        elif event.kind == "refused":
            return Verdict("failed", f"node {event.node_id} refused the job: {event.detail}")
        elif event.kind == "environment_failed":
            first, _, tail = event.detail.partition("\n")
            shown = " | ".join(line.strip() for line in tail.splitlines() if line.strip())
            return self._drop_node(event, f"node {event.node_id} {first}" + (f": {shown}" if shown else ""))
        elif event.kind == "node_stopped":
            self.tally.left(event.node_id)
            log.info("node %s left job %s", event.node_id, self.job.job_id)
        else:
            self.tally.heartbeat(event.node_id, 0)
            if event.kind == "node_started":
                self.tally.nodes[event.node_id].prepared = event.detail.partition("; ")[2]
            log.info("node %s: %s %s", event.node_id, event.kind, event.detail)
        return None

    def _init_failed(self, event: JobEvent) -> Verdict | None:
        first = event.detail.splitlines()[0] if event.detail else "unknown error"
        reason = f"init() failed on node {event.node_id} {self.job.settings.init_max_try} times: {first}"
        return self._drop_node(event, reason)

    def _drop_node(self, event: JobEvent, reason: str) -> Verdict | None:
        """As Azure ML does: the node is dropped, and the job goes on while another node can work."""
        self.tally.drop(event.node_id, "\n".join([reason, *event.detail.splitlines()[1:]]))  # with its traceback
        others = self.tally.working_nodes(time.time(), SILENT_AFTER)
        if others:
            log.warning("%s; node dropped, %d other node(s) go on: %s", reason, len(others), ", ".join(sorted(others)))
            return None
        dropped = len(self.tally.dropped)
        self._orphaned = (time.monotonic(), reason + (f"; no node is left to run the job ({dropped} dropped)"))
        if self.node_grace <= 0:
            return Verdict("failed", self._orphaned[1])
        log.warning("%s; node dropped, waiting up to %gs for another node", reason, self.node_grace)
        return None

    def _no_node_left(self) -> bool:
        """True once every node has been dropped for node_grace seconds with none joining since."""
        assert self._orphaned is not None
        if self.tally.working_nodes(time.time(), SILENT_AFTER):
            self._orphaned = None
            return False
        return time.monotonic() - self._orphaned[0] >= self.node_grace

    def _dead(self, delivery: Delivery) -> bool:
        """A batch the broker gave up on (its delivery limit), or a message a worker refused; True when
        the dead letter is parked, to be acked once acted on.

        Only the first fails a batch. A refused message (unparseable, unsigned, forged) is not
        the coordinator's batch: the genuine one is still queued, so it is logged and dropped.
        """
        reason = delivery.reason or "dead-lettered"
        if reason != "delivery_limit":
            self.rejections.drop(_refusal_kind(reason), f"a worker of {self.names.batches}", reason)
            return False
        message = self._own_batch(delivery.body)  # a pack dead-lettered whole arrives member by member
        if message is None or self.tally.resolved(message.batch_id) or message.batch_id in self._parked:
            return False
        self._parked[message.batch_id] = _Parked(message, delivery, time.monotonic())
        return True

    def _fail_dead_letters(self, final: bool = False) -> None:
        """Fail the batches the broker gave up on, once the reports published before their dead letters
        have been read: a packed member can commit (and report) before its pack is lost and
        dead-lettered, and the two arrive on different queues in no set order. A dead letter waits
        DEAD_GRACE seconds and until the reports queue is drained, or DEAD_CAP seconds at most."""
        now = time.monotonic()
        due = [p for p in self._parked.values() if final or now - p.since >= DEAD_GRACE]
        if not due:
            return
        if not final and not self._reports_drained():
            due = [p for p in due if now - p.since >= DEAD_CAP]
        for parked in sorted(due, key=lambda p: p.message.batch_id):
            del self._parked[parked.message.batch_id]
            if not self.tally.resolved(parked.message.batch_id):
                self._out_of_tries(parked.message)
        try:
            settle(self.broker, [p.delivery for p in due])
        except BrokerError as exc:  # they come back, and are found resolved
            log.warning("could not ack %d dead letters: %s", len(due), exc.line())

    def _reports_drained(self) -> bool:
        if not self.sink.empty():
            return False
        try:
            return self.broker.depth(self.names.reports) == 0
        except BrokerError as exc:
            log.debug("reports queue depth unavailable: %s", exc.line())
            return False

    def _own_batch(self, body: bytes) -> BatchMessage | None:
        """The batch a dead letter stands for, if it is genuinely one of this job's."""
        where = f"the queue {self.names.dead}"
        try:
            message = BatchMessage.model_validate_json(body)
        except ValidationError:
            self.rejections.drop("unreadable dead letter", where, "it does not parse as a batch message")
            return None
        if self.signing_key is not None and not _genuine(self.signing_key, self.job.job_id, message):
            self.rejections.drop("forged dead letter", where, f"batch {message.batch_id} is not signed by the fleet")
            return None
        if message.job_id != self.job.job_id or not 0 <= message.batch_id < self.tally.batches_total:
            detail = f"job {message.job_id}, batch {message.batch_id}"
            self.rejections.drop("dead letter of no batch of this job", where, detail)
            return None
        return message

    def _out_of_tries(self, message: BatchMessage) -> None:
        reason = (
            f"out of tries after {self.job.settings.run_max_try} deliveries: "
            "the worker process or node running it died or was lost each time"
        )
        result = BatchResult(
            job_id=self.job.job_id,
            batch_id=message.batch_id,
            node_id="broker",
            attempt=self.job.settings.run_max_try,
            outcome="failed",
            total=len(message.items),
            error=reason,
            error_type="DeadLettered",
            started=time.time(),
        )
        self._apply(result)

    def _apply(self, result: BatchResult) -> None:
        if self.tally.apply(result) and result.outcome == "failed" and self.on_failed is not None:
            self.on_failed(result)

    def _with_first_error(self, reason: str) -> str:
        first = self.tally.errors.first()
        if first is None:
            return reason
        batch_id, error = first
        return f"{reason}; first error, batch {batch_id}: {error.splitlines()[0]}"

    def _stall_reason(self, stall: float) -> str:
        pending = self.tally.batches_total - self.tally.done
        dropped = describe(self.rejections.counts())
        dropped = f"; dropped as untrusted: {dropped} (does every node use the fleet's signing key?)" if dropped else ""
        if not self.tally.nodes:
            return (
                f"no progress for {stall:g}s and no worker has reported; {pending} mini-batches are waiting "
                f"(start workers with `batchfleet worker`, or raise progress_update_timeout){dropped}"
            )
        return f"no progress for {stall:g}s (progress_update_timeout); {pending} mini-batches never finished{dropped}"


def await_nodes_stopped(broker: Broker, job: JobConfig, nodes: dict[str, float], timeout: float,
                        gate: ReportGate) -> set[str]:  # fmt: skip
    """Wait until each node has said node_stopped (its logs are uploaded) or gone silent; return the
    ones that never said goodbye. `nodes` maps each node to when it was last heard from."""
    names = queue_names(job.job_id)
    sink: queue.Queue[Delivery] = queue.Queue()
    tag = broker.consume(names.reports, 500, sink)
    last_seen, gone = dict(nodes), set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            now = time.time()
            if not [n for n, seen in last_seen.items() if n not in gone and now - seen <= SILENT_AFTER]:
                break
            try:
                delivery = sink.get(timeout=0.2)
            except queue.Empty:
                continue
            settle(broker, [delivery])
            for report in gate.reports(delivery.body):
                if report.node_id not in last_seen:
                    continue
                if isinstance(report, JobEvent) and report.kind == "node_stopped":
                    gone.add(report.node_id)
                else:
                    last_seen[report.node_id] = time.time()
    finally:
        broker.cancel(tag)
    return set(last_seen) - gone
