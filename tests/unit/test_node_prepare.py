"""A job being prepared (an environment build can take minutes) does not hold up the node's other
jobs, and a job that ends while it is prepared is left, not started."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from common.jobarea import JobArea
from common.messages import JobAnnouncement, JobConfig
from common.signing import sign_announcement, sign_job
from common.storage import StorageOptions, open_storage
from tests.unit.test_node_ids import KEY, fleet_job, follow_in_thread, node
from worker.intake import node as node_module
from worker.intake.announcements import load_job


def wait_for(check: Any, seconds: float = 30) -> bool:
    tick = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if check():
            return True
        tick.wait(0.05)
    return bool(check())


def announce(broker: Any, job: JobConfig, state: str) -> None:
    uri = f"{job.store_uri}/job.json"
    sig = sign_announcement(KEY, job.job_id, uri, state)
    broker.announce(JobAnnouncement(job_id=job.job_id, job_uri=uri, state=state, sig=sig).model_dump_json().encode())  # type: ignore[arg-type]


def test_a_long_preparation_does_not_hold_up_other_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, broker, result = fleet_job(tmp_path, files=6)
    slow = sign_job(KEY, run.job.model_copy(update={"job_id": "slow", "store_uri": f"{run.job.store_uri}-slow"}))
    building, built = threading.Event(), threading.Event()
    real_prepare = node_module.prepare_job

    def prepare(job: JobConfig, *args: Any) -> Any:
        if job.job_id == "slow":  # an environment build that lasts until the test says so
            building.set()
            built.wait(60)
        return real_prepare(job, *args)

    monkeypatch.setattr(node_module, "prepare_job", prepare)
    monkeypatch.setattr(node_module, "load_job", lambda a, *rest: slow if a.job_id == "slow" else load_job(a, *rest))
    worker = node(broker, tmp_path, "w1", "hostA", node_id="n1")
    try:
        announce(broker, slow, "active")
        assert building.wait(30)
        thread = follow_in_thread(run, result)  # announced while "slow" is still being built
        thread.join(60)
        assert result["summary"].state == "succeeded", result["summary"].reason
        merged = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
        assert sorted(merged) == [f"f{i:05d}.txt" for i in range(6)]
        ended = JobArea(slow.store_uri).ended  # the coordinator marks the area first; workers check it
        open_storage(ended, StorageOptions()).write_bytes(ended, b"1")
        announce(broker, slow, "ended")  # ends while still being prepared
        assert wait_for(lambda: worker._preparing["slow"].ended)
        built.set()
        assert wait_for(lambda: not worker._preparing)
        assert "slow" not in worker.jobs  # left once prepared, never started
    finally:
        built.set()
        worker.stop(grace=5)
