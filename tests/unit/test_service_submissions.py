"""The coordinator service answers every submission once it has read the job (or refused it), on the
in-memory broker; `batchfleet submit`'s wait for that answer."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest

from common.broker.base import Delivery, queue_names
from common.broker.memory import MemoryBroker
from common.jobarea import JobArea
from common.messages import JobSubmission, SubmitReply
from coordinator.plan.submit import write_job
from coordinator.runner import RunOptions
from coordinator.service import (
    SERVICE_ID,
    CoordinatorService,
    ServiceConfig,
    await_reply,
    declare_submissions,
    submissions_queue,
)
from tests.runtime_helpers import make_job


class Harness:
    """A service on a memory broker whose jobs run until released."""

    def __init__(self, tmp: Path, max_jobs: int = 1) -> None:
        self.broker = MemoryBroker()
        self.store = tmp / "store"
        self.tmp = tmp
        self.release = threading.Event()
        self.ran: list[str] = []
        options = RunOptions(store_uri=str(self.store), broker=self.broker)
        self.service = CoordinatorService(ServiceConfig(options, max_jobs), self._run)
        self.stop = threading.Event()
        declare_submissions(self.broker)
        self.thread = threading.Thread(target=self.service.serve, args=(self.stop,), daemon=True)
        self.thread.start()

    def _run(self, job_id: str, _options: RunOptions) -> str:
        self.ran.append(job_id)
        self.release.wait(30)
        return "succeeded"

    def store_job(self, job_id: str) -> str:
        job = make_job(self.tmp, self.tmp / "code", self.tmp / "data", job_id=job_id)
        job = job.model_copy(update={"store_uri": JobArea.of(str(self.store), job_id).root})
        write_job(job, self.options)
        return JobArea(job.store_uri).job_file

    @property
    def options(self):  # type: ignore[no-untyped-def]
        return self.service.config.options.storage_options

    def submit(self, job_id: str, job_uri: str | None = None) -> SubmitReply | None:
        reply_to = self.broker.declare_reply_queue()
        sink: queue.Queue[Delivery] = queue.Queue()
        tag = self.broker.consume(reply_to, 1, sink)
        uri = job_uri or JobArea.of(str(self.store), job_id).job_file
        request = JobSubmission(job_id=job_id, job_uri=uri, state="active", reply_to=reply_to)
        self.broker.publish(submissions_queue(), [request.model_dump_json().encode()])
        try:
            return await_reply(sink, self.broker, job_id, 10)
        finally:
            self.broker.cancel(tag)

    def close(self) -> None:
        self.release.set()
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    h = Harness(tmp_path)
    yield h
    h.close()


def test_an_accepted_job_is_answered_and_runs(harness: Harness) -> None:
    harness.store_job("job-a")
    reply = harness.submit("job-a")
    assert reply is not None and reply.accepted and reply.reason == "running"
    assert "pid" in reply.coordinator
    deadline = time.monotonic() + 10
    while "job-a" not in harness.ran and time.monotonic() < deadline:
        time.sleep(0.05)
    assert harness.ran == ["job-a"]


def test_a_job_missing_from_the_coordinators_store_is_refused_with_the_reason(harness: Harness, tmp_path: Path) -> None:
    elsewhere = str(tmp_path / "other-store" / "job-b" / "job.json")
    reply = harness.submit("job-b", job_uri=elsewhere)
    assert reply is not None and not reply.accepted
    assert f"no job job-b in this coordinator's store {harness.store}" in reply.reason
    assert elsewhere in reply.reason and f"submit with --store {harness.store}" in reply.reason
    assert harness.ran == []
    dead: queue.Queue[Delivery] = queue.Queue()
    harness.broker.consume(queue_names(SERVICE_ID).dead, 1, dead)
    assert "refused" in (dead.get(timeout=5).reason or "")  # the submission is kept, dead-lettered with why


def test_a_second_job_beyond_max_jobs_is_queued_then_runs(harness: Harness) -> None:
    for job_id in ("job-1", "job-2"):
        harness.store_job(job_id)
    first, second = harness.submit("job-1"), harness.submit("job-2")
    assert first is not None and first.reason == "running"
    assert second is not None and second.accepted and second.reason.startswith("queued behind 1 job(s)")
    again = harness.submit("job-2")
    assert again is not None and again.accepted and "already" in again.reason
    harness.release.set()
    deadline = time.monotonic() + 10
    while harness.ran != ["job-1", "job-2"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert harness.ran == ["job-1", "job-2"]


def test_await_reply_drops_strangers_and_times_out() -> None:
    broker = MemoryBroker()
    reply_to = broker.declare_reply_queue()
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(reply_to, 1, sink)
    broker.publish(reply_to, [b"not json", SubmitReply(job_id="other", accepted=True).model_dump_json().encode()])
    started = time.monotonic()
    assert await_reply(sink, broker, "mine", 0.5) is None
    assert 0.4 < time.monotonic() - started < 5
    broker.publish(reply_to, [SubmitReply(job_id="mine", accepted=False, reason="no").model_dump_json().encode()])
    answer = await_reply(sink, broker, "mine", 5)
    assert answer is not None and answer.reason == "no"


def test_reply_queues_are_the_only_reply_targets() -> None:
    with pytest.raises(ValueError):
        JobSubmission(job_id="j", job_uri="/s/j/job.json", state="active", reply_to="bf.j.batches")
