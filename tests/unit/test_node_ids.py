"""Node ids unique in a fleet: the registry's decisions, a second node under a live id refused on the
in-memory broker (it leaves, nothing is lost, no file is shared), and a worker started mid-job joining
on its hello rather than at the next announcement."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from common.broker.memory import MemoryBroker
from common.messages import JobAnnouncement, JobEvent
from common.rejections import Rejections
from common.signing import sign_announcement, sign_job
from common.storage import StorageOptions
from coordinator.follow.nodes import LIVE_FOR, NodeRegistry
from coordinator.plan.snapshot import snapshot_code
from coordinator.runner import JobRun, RunOptions, finish_job
from tests.runtime_helpers import make_files, make_job, write_script
from worker.intake.announcements import read_announcement
from worker.intake.node import NodeConfig, WorkerNode


def event(kind: str, session: str, host: str = "", node: str = "n1") -> JobEvent:
    return JobEvent(job_id="j", node_id=node, kind=kind, session=session, host=host)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_live_session_holds_the_id() -> None:
    clock = Clock()
    nodes = NodeRegistry(clock=clock)
    assert nodes.check(event("node_started", "aaaa", "hostA (pid 1)")).counts
    assert nodes.check(event("heartbeat", "aaaa")).counts
    second = nodes.check(event("node_started", "bbbb", "hostB (pid 2)"))
    assert not second.counts
    assert second.refusal is not None
    assert "node id n1 is already used by hostA (pid 1)" in second.refusal and "hostB (pid 2)" in second.refusal
    assert nodes.check(event("heartbeat", "bbbb", "hostB (pid 2)")).refusal is None  # once per REFUSE_EVERY
    clock.now += 11
    assert nodes.check(event("heartbeat", "bbbb", "hostB (pid 2)")).refusal is not None  # still there: again
    assert not nodes.check(event("node_stopped", "bbbb")).counts  # the refused one leaving is no news
    assert nodes.check(event("heartbeat", "aaaa")).counts  # the holder is untouched
    assert nodes.check(event("node_started", "cccc", node="n2")).counts  # another id


def test_a_gone_holder_frees_the_id() -> None:
    clock = Clock()
    nodes = NodeRegistry(clock=clock)
    nodes.check(event("node_started", "aaaa", "hostA"))
    nodes.check(event("node_stopped", "aaaa"))
    assert nodes.check(event("node_started", "bbbb", "hostB")).counts  # it said goodbye
    clock.now += LIVE_FOR + 1
    assert nodes.check(event("node_started", "cccc", "hostC")).counts  # bbbb fell silent (killed, say)
    assert nodes.check(event("heartbeat", "bbbb")).refusal is not None  # and is refused if it comes back


def test_nodes_without_a_session_are_not_compared() -> None:
    nodes = NodeRegistry()
    assert nodes.check(event("node_started", "aaaa")).counts
    assert nodes.check(event("heartbeat", "")).counts


def test_a_refusal_is_signed_with_whom_it_refuses_and_why() -> None:
    """Anyone may publish announcements: a captured refusal cannot be turned against another node
    (or given another reason), and an unsigned one is dropped by a node that has the fleet's key."""
    key, uri = b"k" * 32, "s3://b/store/j1/job.json"
    whom = ("twin", "aaaa1111", "node id twin is already used by hostA")
    sig = sign_announcement(key, "j1", uri, "refused", refused=whom)
    genuine = JobAnnouncement(job_id="j1", job_uri=uri, state="refused", node_id=whom[0], session=whom[1],
                              detail=whom[2], sig=sig)  # fmt: skip
    rejections = Rejections(logging.getLogger("test"), "the announcements")

    def believed(announcement: JobAnnouncement) -> bool:
        return read_announcement(announcement.model_dump_json().encode(), key, rejections) is not None

    assert believed(genuine)
    assert not believed(genuine.model_copy(update={"session": "bbbb2222"}))
    assert not believed(genuine.model_copy(update={"node_id": "other"}))
    assert not believed(genuine.model_copy(update={"detail": "leave now"}))
    assert not believed(genuine.model_copy(update={"sig": None}))
    assert not believed(genuine.model_copy(update={"state": "ended"}))  # nor serves as another state
    # The other states' signatures are as they were: nothing to refuse, nothing more signed.
    active = sign_announcement(key, "j1", uri, "active")
    assert believed(JobAnnouncement(job_id="j1", job_uri=uri, state="active", sig=active))


KEY = b"node-ids-test-fleet-key"
SLOW = """\
import os, time

def run(mini_batch):
    time.sleep(0.15)
    return [os.path.basename(p) for p in mini_batch]
"""


def fleet_job(tmp: Path, files: int, **settings: Any) -> tuple[JobRun, MemoryBroker, dict[str, Any]]:
    """A fleet-mode job (announced, no node of its own, signed as a fleet's are) on an in-memory broker."""
    make_files(tmp / "data", files)
    write_script(tmp / "code", SLOW)
    job = make_job(tmp, tmp / "code", tmp / "data", mini_batch_size=1, process_count_per_node=1, **settings)
    code_uri, digest, _ = snapshot_code(tmp / "code", str(tmp / "store"), StorageOptions())
    job = sign_job(KEY, job.model_copy(update={"code_uri": code_uri, "code_hash": digest}))
    broker = MemoryBroker()
    options = RunOptions(store_uri=str(tmp / "store"), broker=broker, embedded=False, progress=False,
                         announce_every=3600, node_wait=5, signing_key=KEY)  # fmt: skip
    return JobRun(job, options), broker, {}


def follow_in_thread(run: JobRun, result: dict[str, Any]) -> threading.Thread:
    batches, items = run.submit()
    thread = threading.Thread(target=lambda: result.update(summary=finish_job(run, run.new_tally(batches), items)))
    thread.start()
    return thread


def node(broker: MemoryBroker, tmp: Path, name: str, host: str, node_id: str = "twin") -> WorkerNode:
    config = NodeConfig(node_id=node_id, work_root=tmp / name, heartbeat_interval=0.5, sample_perf=False, host=host,
                        signing_key=KEY, store_roots=(str(tmp),))  # fmt: skip
    worker = WorkerNode(broker, config)
    worker.start(listen=True)
    return worker


def test_a_second_node_under_a_live_id_is_refused_and_nothing_is_shared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run, broker, result = fleet_job(tmp_path, files=16)
    first = node(broker, tmp_path, "w1", "hostA (pid 1)")
    second = node(broker, tmp_path, "w2", "hostB (pid 2)")
    try:
        thread = follow_in_thread(run, result)
        thread.join(120)
    finally:
        first.stop(grace=5)
        second.stop(grace=5)
    summary = result["summary"]
    assert summary.state == "succeeded", summary.reason
    merged = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert sorted(merged) == [f"f{i:05d}.txt" for i in range(16)]  # every item once
    refusals = [r.getMessage() for r in caplog.records if r.name == "worker.intake.membership"]
    assert len(refusals) == 1, refusals
    assert "node id twin is already used by host" in refusals[0] and "with the same id was refused" in refusals[0]
    assert "hostA (pid 1)" in refusals[0] and "hostB (pid 2)" in refusals[0]
    sessions = {first.config.session, second.config.session}
    written = [p for p in (tmp_path / "store").rglob("*") if p.is_file() and "/parts/" in p.as_posix()]
    written += [p for p in (tmp_path / "out" / "logs").rglob("*.txt") if "/twin/" in p.as_posix()]
    assert written and all(any(s in p.name for s in sessions) for p in written), written
    assert (
        "node id twin is already used"
        in (tmp_path / "out" / "logs")
        .joinpath(next(p.name for p in (tmp_path / "out" / "logs").glob("job_progress_overview.*")))
        .read_text()
    )


def test_a_worker_started_mid_job_joins_on_its_hello(tmp_path: Path) -> None:
    # Announced every hour: the late worker can only have learnt of the job from its hello.
    run, broker, result = fleet_job(tmp_path, files=6, progress_update_timeout=60)
    thread = follow_in_thread(run, result)
    late: WorkerNode | None = None
    try:
        threading.Event().wait(1.0)  # the job's one announcement has gone by
        late = node(broker, tmp_path, "late", "hostL", node_id="late")
        thread.join(60)
    finally:
        if late is not None:
            late.stop(grace=5)
    assert result["summary"].state == "succeeded", result["summary"].reason
