"""`batchfleet coordinator`: a long-running service that runs submitted jobs, several at once.

Submissions arrive on a durable queue and are acked only when their job has ended, so a
restarted service gets unfinished ones again and carries them on from the store. Each
submission is answered as soon as the service has read its job from the store (or refused it,
with the reason in one line), on the submitter's reply queue: `batchfleet submit` waits for it.
Up to max_jobs run at once; up to QUEUED more are held, answered, until one ends.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from common.broker.base import Broker, Delivery, queue_names
from common.errors import BatchfleetError, UsageError
from common.jobarea import JobArea
from common.messages import JobSubmission, SubmitReply
from common.rejections import Rejections
from common.signing import SignatureError, sign_reply, verify_announcement, verify_reply
from coordinator.follow.settle import settle
from coordinator.runner import RunOptions

log = logging.getLogger(__name__)

SERVICE_ID = "_service"  # its queues: bf._service.batches (submissions) and bf._service.dead
QUEUED = 32  # submissions taken and answered beyond max_jobs, waiting for a free slot


def submissions_queue() -> str:
    return queue_names(SERVICE_ID).batches


def declare_submissions(broker: Broker) -> None:
    broker.declare_job(SERVICE_ID, run_max_try=3)


@dataclass
class ServiceConfig:
    options: RunOptions
    max_jobs: int = 4


def check_submitted(request: JobSubmission, options: RunOptions) -> None:
    """Read the submitted job from this coordinator's store; raise UsageError saying why it cannot run."""
    from common.signing import check_job_signature
    from coordinator.attach import load_job

    store = options.store_uri
    try:
        job = load_job(store, request.job_id, options.storage_options)
    except UsageError as exc:
        if JobArea.of(store, request.job_id).job_file == request.job_uri:
            raise
        raise UsageError(
            f"no job {request.job_id} in this coordinator's store {store} (it was written to {request.job_uri})",
            f"submit with --store {store}, or set store in batchfleet.toml",
        ) from exc
    if options.signing_key is not None:
        check_job_signature(job, options.signing_key)


class CoordinatorService:
    """Consumes submissions; one thread per running job."""

    def __init__(
        self,
        config: ServiceConfig,
        run_job: Callable[[str, RunOptions], object],
        check_job: Callable[[JobSubmission, RunOptions], None] = check_submitted,
    ) -> None:
        self.config = config
        self.broker = config.options.broker
        self.run_job = run_job
        self.check_job = check_job
        self.sink: queue.Queue[Delivery] = queue.Queue()
        self.running: dict[str, threading.Thread] = {}
        self.waiting: deque[tuple[str, Delivery]] = deque()
        self.label = f"{socket.gethostname()} (pid {os.getpid()})"
        self.rejections = Rejections(log, "the submissions queue")
        self._lock = threading.Lock()

    def serve(self, stop: threading.Event) -> None:
        declare_submissions(self.broker)
        tag = self.broker.consume(submissions_queue(), self.config.max_jobs + QUEUED, self.sink)
        try:
            while not stop.is_set():
                try:
                    delivery = self.sink.get(timeout=0.5)
                except queue.Empty:
                    continue
                self._accept(delivery)
        finally:
            self.broker.cancel(tag)

    def _accept(self, delivery: Delivery) -> None:
        try:
            request = JobSubmission.model_validate_json(delivery.body)
        except ValidationError as exc:
            settle(self.broker, [delivery], "dead", f"unreadable submission: {exc.errors()[0]['msg']}")
            return
        key = self.config.options.signing_key
        if key is not None:
            try:
                verify_announcement(key, request.job_id, request.job_uri, request.state, request.sig, submission=True)
            except SignatureError as exc:
                self.rejections.drop(f"{exc.reason} submission", "an unknown sender", exc.line())
                settle(self.broker, [delivery], "dead", exc.line())
                return
        job_id = request.job_id
        with self._lock:
            known = job_id in self.running or any(waiting == job_id for waiting, _ in self.waiting)
        if known:
            self._reply(request, True, "already running or queued here")
            settle(self.broker, [delivery])  # a duplicate of a job this service has
            return
        try:
            self.check_job(request, self.config.options)
        except BatchfleetError as exc:
            log.error("refused job %s: %s", job_id, exc.line())
            self._reply(request, False, exc.line())
            settle(self.broker, [delivery], "dead", f"refused: {exc.line()}")
            return
        with self._lock:
            if len(self.running) < self.config.max_jobs:
                self._start(job_id, delivery)
                how = "running"
            else:
                self.waiting.append((job_id, delivery))
                how = f"queued behind {len(self.waiting)} job(s) (--max-jobs {self.config.max_jobs})"
        log.warning("accepted job %s: %s", job_id, how)
        self._reply(request, True, how)

    def _reply(self, request: JobSubmission, accepted: bool, reason: str) -> None:
        """Answer the submitter, if it waits; one it cannot reach any more is only logged."""
        if request.reply_to is None:
            return
        reply = SubmitReply(job_id=request.job_id, accepted=accepted, reason=reason, coordinator=self.label)
        key = self.config.options.signing_key
        if key is not None:  # the submitter deletes a refused job's area: a forged refusal must not pass
            reply.sig = sign_reply(key, reply.job_id, accepted, reason, self.label)
        try:
            self.broker.publish(request.reply_to, [reply.model_dump_json().encode()])
        except BatchfleetError as exc:
            log.warning("could not answer the submitter of job %s: %s", request.job_id, exc.line())

    def _start(self, job_id: str, delivery: Delivery) -> None:
        """Run a job on its own thread (call with the lock held)."""
        thread = threading.Thread(target=self._run, args=(job_id, delivery), name=f"bf-job-{job_id}", daemon=True)
        self.running[job_id] = thread
        thread.start()

    def _run(self, job_id: str, delivery: Delivery) -> None:
        try:
            summary = self.run_job(job_id, self.config.options)
            log.warning("job %s ended: %s", job_id, getattr(summary, "state", summary))
        except BatchfleetError as exc:
            log.error("job %s could not run: %s", job_id, exc.line())
        except Exception:
            log.exception("job %s crashed the coordinator thread", job_id)
        finally:
            with self._lock:
                self.running.pop(job_id, None)
                if self.waiting:
                    self._start(*self.waiting.popleft())
            settle(self.broker, [delivery])


def await_reply(
    sink: queue.Queue[Delivery], broker: Broker, job_id: str, timeout: float, key: bytes | None = None
) -> SubmitReply | None:
    """The coordinator's answer about `job_id` on a reply queue, or None after `timeout` seconds.
    Anything else that arrives there (anyone may publish) is dropped, and so is, with a key, an
    answer the fleet's key did not sign."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            delivery = sink.get(timeout=left)
        except queue.Empty:
            return None
        settle(broker, [delivery])
        try:
            reply = SubmitReply.model_validate_json(delivery.body)
        except ValidationError:
            log.warning("ignored an unreadable message on the reply queue")
            continue
        if reply.job_id != job_id:
            continue
        if key is not None:
            try:
                verify_reply(key, reply.job_id, reply.accepted, reply.reason, reply.coordinator, reply.sig)
            except SignatureError as exc:
                log.warning("ignored an answer on the reply queue: %s", exc.line())
                continue
        return reply
    return None
