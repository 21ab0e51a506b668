"""init() failures: a node whose init() keeps failing is dropped; the job goes on while others work."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coordinator.follow.follower import Follower
from coordinator.follow.tally import Tally
from tests.runtime_helpers import make_files, make_job, submit_in_memory, write_script
from worker.intake.node import NodeConfig, WorkerNode

FAILS_ON_BAD_NODE = """
import os, time
from azureml_user.parallel_run import EntryScript
def init():
    if EntryScript().node_id == "bad":
        raise OSError("no model on this node")
def run(mini_batch):
    deadline = time.time() + 30
    while not os.path.exists(os.environ["GO_FILE"]) and time.time() < deadline:
        time.sleep(0.05)  # the test lets batches finish only once the bad node has given up
    return [p[-9:] for p in mini_batch]
"""


def follow_with_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, names: list[str]
) -> tuple[str, str | None, Tally]:
    make_files(tmp_path / "data", 6)
    write_script(tmp_path / "code", script)
    go = tmp_path / "go"
    monkeypatch.setenv("GO_FILE", str(go))
    job = make_job(
        tmp_path, tmp_path / "code", tmp_path / "data", init_max_try=2, process_count_per_node=1, mini_batch_size=1
    )
    broker, batches = submit_in_memory(job)
    nodes = [
        WorkerNode(broker, NodeConfig(node_id=name, work_root=tmp_path / name, heartbeat_interval=0.5))
        for name in names
    ]
    for node in nodes:
        node.start(listen=False)
        node.serve(job)
    deadline = time.monotonic() + 60
    while not nodes[0]._jobs[job.job_id].pool.gave_up and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    tally = Tally(batches)
    try:
        verdict = Follower(broker, job, tally).follow()
    finally:
        for node in nodes:
            node.stop()
    return verdict.state, verdict.reason, tally


def test_a_node_whose_init_fails_is_dropped_and_the_job_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, reason, tally = follow_with_nodes(tmp_path, monkeypatch, FAILS_ON_BAD_NODE, ["bad", "good"])
    assert state == "succeeded", reason
    assert list(tally.dropped) == ["bad"] and "no model on this node" in tally.dropped["bad"]
    assert tally.committed_count == 6 and {n for n, seen in tally.nodes.items() if seen.batches} == {"good"}
    assert tally.working_nodes(tally.nodes["good"].last_seen, 1.0) == ["good"]


def test_the_job_fails_when_no_node_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = FAILS_ON_BAD_NODE.replace('== "bad"', '!= ""')
    state, reason, tally = follow_with_nodes(tmp_path, monkeypatch, script, ["bad", "worse"])
    assert state == "failed"
    assert reason is not None and "init() failed on node" in reason and "no model on this node" in reason
    assert "no node is left to run the job (2 dropped)" in reason
    assert set(tally.dropped) == {"bad", "worse"} and not tally.committed_count


def test_a_dropped_node_stays_dropped_when_it_heartbeats() -> None:
    tally = Tally(3)
    tally.heartbeat("a", 0)
    tally.drop("a", "init() failed")
    tally.heartbeat("a", 0)
    assert tally.nodes["a"].stopped and tally.working_nodes(tally.nodes["a"].last_seen, 5.0) == []


def test_a_node_joining_after_every_node_was_dropped_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a fleet a node started later joins at the next announcement: the coordinator waits for it."""
    make_files(tmp_path / "data", 4)
    write_script(tmp_path / "code", FAILS_ON_BAD_NODE)
    monkeypatch.setenv("GO_FILE", str(tmp_path / "go"))
    (tmp_path / "go").touch()
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", init_max_try=1, mini_batch_size=1)
    broker, batches = submit_in_memory(job)
    bad, good = (
        WorkerNode(broker, NodeConfig(node_id=name, work_root=tmp_path / name, heartbeat_interval=0.5))
        for name in ("bad", "good")
    )
    bad.start(listen=False)
    bad.serve(job)
    deadline = time.monotonic() + 60
    while not bad._jobs[job.job_id].pool.gave_up and time.monotonic() < deadline:
        time.sleep(0.05)
    good.start(listen=False)
    good.serve(job)  # joins after the only other node was dropped
    tally = Tally(batches)
    try:
        verdict = Follower(broker, job, tally, node_grace=30).follow()
    finally:
        bad.stop()
        good.stop()
    assert verdict.state == "succeeded", verdict.reason
    assert list(tally.dropped) == ["bad"] and tally.committed_count == 4


def test_a_node_whose_environment_build_fails_is_dropped_with_the_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from common.messages import PythonEnvironment
    from worker.intake import prepare
    from worker.run.environment import BuiltEnvironment, EnvironmentBuildError

    def fake_build(env: PythonEnvironment, work_root: Path, log_file: Path) -> BuiltEnvironment:
        if work_root.name == "bad":
            raise EnvironmentBuildError("could not build the job's environment (uv exit 1)", "x\nno bfnowhere here")
        return BuiltEnvironment(work_root / "envs" / "k", Path(sys.executable), [], False, 0.1, [])

    monkeypatch.setattr(prepare, "ensure_environment", fake_build)
    make_files(tmp_path / "data", 4)
    write_script(tmp_path / "code", "def run(mini_batch):\n    return [p[-9:] for p in mini_batch]\n")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", process_count_per_node=1, mini_batch_size=1,
                   environment="job")  # fmt: skip
    job = job.model_copy(update={"python_env": PythonEnvironment(requirements=["bfnowhere==1"])})
    broker, batches = submit_in_memory(job)
    nodes = [WorkerNode(broker, NodeConfig(node_id=n, work_root=tmp_path / n, heartbeat_interval=0.5))
             for n in ("bad", "good")]  # fmt: skip
    for node in nodes:
        node.start(listen=False)
        node.serve(job)
    tally = Tally(batches)
    try:
        verdict = Follower(broker, job, tally, node_grace=10.0).follow()  # as a fleet: the good node may be later
    finally:
        for node in nodes:
            node.stop()
    assert verdict.state == "succeeded", verdict.reason
    assert list(tally.dropped) == ["bad"]
    assert "node bad could not build the job's environment (uv exit 1): x | no bfnowhere here" in tally.dropped["bad"]
    assert tally.committed_count == 4
