"""Reports travel bundled from a node's reporter to the coordinator's follower."""

from __future__ import annotations

import logging
import queue
from pathlib import Path

import pytest

from common.broker.base import Delivery, queue_names
from common.broker.memory import MemoryBroker
from common.messages import (
    BatchMessage,
    BatchResult,
    Item,
    JobEvent,
    bundle_reports,
    encode_report,
    unbundle_reports,
)
from common.rejections import Rejections
from coordinator.follow.follower import Follower
from coordinator.follow.gate import ReportGate
from coordinator.follow.tally import Tally
from tests.runtime_helpers import make_job

JOB = make_job(Path("/tmp/bf-reports"), Path("/code"), Path("/data"), job_id="j")
PART = f"{JOB.store_uri}/parts/n/process001.1.seg#10+5"


def result(batch_id: int, error: str | None = None) -> BatchResult:
    return BatchResult(job_id="j", batch_id=batch_id, node_id="n", attempt=1, outcome="committed", total=1,
                       succeeded=1, error=error, part=PART)  # fmt: skip


def decode_reports(message: bytes) -> list[BatchResult | JobEvent]:
    return ReportGate(JOB, None, 10, Rejections(logging.getLogger("test"), "bf.j.reports")).reports(message)


def test_a_group_of_reports_becomes_one_message_and_comes_back_in_order() -> None:
    bodies = [encode_report(result(i, error="multi\nline" if i == 1 else None)) for i in range(3)]
    messages = bundle_reports(bodies)
    assert len(messages) == 1
    assert unbundle_reports(messages[0]) == bodies
    assert [r.batch_id for r in decode_reports(messages[0])] == [0, 1, 2]  # type: ignore[union-attr]


def test_a_lone_report_is_sent_as_it_is() -> None:
    body = encode_report(JobEvent(job_id="j", node_id="n", kind="heartbeat"))
    assert bundle_reports([body]) == [body]
    assert unbundle_reports(body) == [body]


def test_bundles_stay_under_the_size_limit() -> None:
    bodies = [encode_report(result(i)) for i in range(10)]
    messages = bundle_reports(bodies, limit=3 * len(bodies[0]))
    assert len(messages) > 1
    assert [part for message in messages for part in unbundle_reports(message)] == bodies


def test_an_unreadable_report_in_a_bundle_skips_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    messages = bundle_reports([encode_report(result(0)), b"Rnot json", encode_report(result(2))])
    with caplog.at_level(logging.WARNING):
        reports = decode_reports(messages[0])
    assert [r.batch_id for r in reports] == [0, 2]  # type: ignore[union-attr]
    assert "dropped on bf.j.reports: unreadable report" in caplog.text


def test_a_pack_dead_lettered_after_one_member_committed_fails_only_the_other(tmp_path: Path) -> None:
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", per_message=2, run_max_try=1)
    broker = MemoryBroker()
    broker.declare_job(job.job_id, job.settings.run_max_try)
    names = queue_names(job.job_id)
    messages = [BatchMessage(job_id=job.job_id, batch_id=i, items=[Item(uri=f"/d/{i}", name=str(i))]) for i in range(2)]
    broker.publish(names.batches, [m.model_dump_json().encode() for m in messages], per_message=2)
    sink: queue.Queue[Delivery] = queue.Queue()
    tag = broker.consume(names.batches, 1, sink)
    first, second = sink.get_nowait(), sink.get_nowait()
    assert first.packed and second.packed
    # The member's report waits behind a backlog, so its pack's dead letter is read first.
    backlog = [JobEvent(job_id=job.job_id, node_id="n", kind="heartbeat", detail="busy=1") for _ in range(549)]
    report = result(0).model_copy(update={"job_id": job.job_id, "part": f"{job.store_uri}/parts/n/p.seg#10+5"})
    broker.publish(names.reports, [encode_report(event) for event in backlog] + [encode_report(report)])
    broker.cancel(tag)  # the node is lost before the pack is settled: with one try, it is dead-lettered whole
    tally = Tally(2)
    verdict = Follower(broker, job, tally).follow()
    assert verdict.state == "succeeded"
    assert list(tally.committed_ids()) == [0] and list(tally.failed_ids()) == [1]
    assert tally.failures[1].error_type == "DeadLettered"
    assert tally.duplicates == 0, "a stale dead letter of a committed batch is no duplicate run"


def test_a_dead_letter_is_acked_only_once_its_batch_is_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coordinator.follow.follower as follow

    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", run_max_try=1)
    broker = MemoryBroker()
    broker.declare_job(job.job_id, job.settings.run_max_try)
    names = queue_names(job.job_id)
    message = BatchMessage(job_id=job.job_id, batch_id=0, items=[Item(uri="/d/0", name="0")])
    broker.publish(names.batches, [message.model_dump_json().encode()])
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.cancel(broker.consume(names.batches, 1, sink))  # lost with its only try: dead-lettered
    tally = Tally(1)
    follower = Follower(broker, job, tally)
    broker.consume(names.dead, 10, follower.sink)
    follower._handle_all(follower._take(1.0))
    # Parked, waiting for reports that may precede it: a coordinator lost now leaves it queued.
    assert broker.unsettled(names.dead) == 1 and not tally.failed_count
    follower._fail_dead_letters()
    assert broker.unsettled(names.dead) == 1, "not before the grace"
    monkeypatch.setattr(follow, "DEAD_GRACE", 0.0)
    follower._fail_dead_letters()
    assert list(tally.failed_ids()) == [0] and broker.unsettled(names.dead) == 0
