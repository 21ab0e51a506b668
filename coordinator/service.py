"""`batchfleet coordinator`: a long-running service that runs submitted jobs, several at once.

Submissions arrive on a durable queue and are acked only when their job has ended, so a
restarted service gets unfinished ones again and carries them on from the store.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from common.broker.base import Broker, Delivery, queue_names
from common.errors import BatchfleetError
from common.messages import JobAnnouncement
from coordinator.follow.settle import settle
from coordinator.runner import RunOptions

log = logging.getLogger(__name__)

SERVICE_ID = "_service"  # its queues: bf._service.batches (submissions) and bf._service.dead


def submissions_queue() -> str:
    return queue_names(SERVICE_ID).batches


def declare_submissions(broker: Broker) -> None:
    broker.declare_job(SERVICE_ID, run_max_try=3)


@dataclass
class ServiceConfig:
    options: RunOptions
    max_jobs: int = 4


class CoordinatorService:
    """Consumes submissions; one thread per running job."""

    def __init__(self, config: ServiceConfig, run_job: Callable[[str, RunOptions], object]) -> None:
        self.config = config
        self.broker = config.options.broker
        self.run_job = run_job
        self.sink: queue.Queue[Delivery] = queue.Queue()
        self.running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def serve(self, stop: threading.Event) -> None:
        declare_submissions(self.broker)
        tag = self.broker.consume(submissions_queue(), self.config.max_jobs, self.sink)
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
            request = JobAnnouncement.model_validate_json(delivery.body)
        except ValidationError as exc:
            settle(self.broker, [delivery], "dead", f"unreadable submission: {exc.errors()[0]['msg']}")
            return
        with self._lock:
            if request.job_id in self.running:
                settle(self.broker, [delivery])  # a duplicate of a job already running here
                return
            thread = threading.Thread(
                target=self._run,
                args=(request.job_id, delivery),
                name=f"bf-job-{request.job_id}",
                daemon=True,
            )
            self.running[request.job_id] = thread
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
            settle(self.broker, [delivery])
