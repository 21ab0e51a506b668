"""The worker runtime end to end on the in-memory broker: contract, retries, timeouts, crashes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from common.storage import StorageOptions
from tests.runtime_helpers import (
    make_files,
    make_job,
    run_embedded,
    serve_and_follow,
    submit_in_memory,
    write_script,
)

OK_SCRIPT = """
import os
def init():
    global seen
    seen = 0
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


@pytest.mark.parametrize("per_message", [1, 3], ids=["one-per-message", "packed"])
def test_all_items_once_in_batch_order(tmp_path: Path, per_message: int) -> None:
    make_files(tmp_path / "data", 25)
    write_script(tmp_path / "code", OK_SCRIPT)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", per_message=per_message, mini_batch_size=4)
    verdict, tally, merged = run_embedded(job, tmp_path / "work")
    assert verdict.state == "succeeded"
    assert tally.batches_total == 7 and tally.committed_count == 7
    assert merged is not None
    assert lines(merged[0]) == [f"f{i:05d}.txt" for i in range(25)]


def test_context_argument_and_short_return(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 6)
    write_script(
        tmp_path / "code",
        """
        def run(mini_batch, mini_batch_context):
            return [f"{mini_batch_context.minibatch_index}"] * (len(mini_batch) - 1)
        """,
    )
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=3)
    verdict, tally, merged = run_embedded(job, tmp_path / "work")
    assert verdict.state == "succeeded"
    assert tally.items_succeeded == 4 and tally.items_failed == 2
    assert merged is not None and lines(merged[0]) == ["0", "0", "1", "1"]
    assert set(tally.short_ids()) == {0, 1} and tally.counts().batches_failed == 2


@pytest.mark.parametrize(("allowed", "state"), [(1, "failed"), (2, "succeeded")])
def test_short_returns_count_against_allowed_failed_count(tmp_path: Path, allowed: int, state: str) -> None:
    """Azure ML v2: a run() returning fewer results than items is a failed mini-batch."""
    make_files(tmp_path / "data", 6)
    write_script(tmp_path / "code", "def run(mini_batch):\n    return mini_batch[1:]\n")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=3, allowed_failed_count=allowed)
    verdict, tally, _ = run_embedded(job, tmp_path / "work")
    assert verdict.state == state
    assert tally.committed_count == 2 and not tally.failed_count, "the rows it returned are kept"
    if state == "failed":
        assert "2 failed mini-batches (2 of them short returns) exceed allowed_failed_count=1" in (verdict.reason or "")


@pytest.mark.parametrize("per_message", [1, 3], ids=["one-per-message", "packed"])
def test_raise_uses_every_try_then_fails_batch(tmp_path: Path, per_message: int) -> None:
    make_files(tmp_path / "data", 4)
    write_script(
        tmp_path / "code",
        """
        import os
        def run(mini_batch):
            if any(p.endswith("f00002.txt") for p in mini_batch):
                raise ValueError("poison")
            return mini_batch
        """,
    )
    job = make_job(
        tmp_path, tmp_path / "code", tmp_path / "data", per_message=per_message, mini_batch_size=2, run_max_try=3
    )
    verdict, tally, _ = run_embedded(job, tmp_path / "work")
    assert verdict.state == "succeeded"  # thresholds ignore failures by default
    assert list(tally.failed_ids()) == [1] and tally.tries[1] == 3
    assert "ValueError: poison" in (tally.failures[1].error or "")
    assert tally.items_failed == 2


def test_threshold_stops_job(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 4)
    write_script(tmp_path / "code", "def run(mini_batch):\n    raise RuntimeError('boom')\n")
    job = make_job(
        tmp_path,
        tmp_path / "code",
        tmp_path / "data",
        mini_batch_size=1,
        run_max_try=1,
        allowed_failed_count=1,
    )
    verdict, _, merged = run_embedded(job, tmp_path / "work")
    assert verdict.state == "failed" and "allowed_failed_count=1" in (verdict.reason or "")
    assert merged is None


@pytest.mark.parametrize("per_message", [1, 3], ids=["one-per-message", "packed"])
def test_timeout_kills_child_and_restarts(tmp_path: Path, per_message: int) -> None:
    make_files(tmp_path / "data", 3)
    write_script(
        tmp_path / "code",
        """
        import time
        def run(mini_batch):
            if any(p.endswith("f00001.txt") for p in mini_batch):
                time.sleep(60)
            return mini_batch
        """,
    )
    job = make_job(
        tmp_path,
        tmp_path / "code",
        tmp_path / "data",
        per_message=per_message,
        mini_batch_size=1,
        run_max_try=2,
        run_invocation_timeout=1,
    )
    verdict, tally, _ = run_embedded(job, tmp_path / "work")
    assert verdict.state == "succeeded"
    assert list(tally.failed_ids()) == [1] and "run_invocation_timeout" in (tally.failures[1].error or "")
    assert list(tally.committed_ids()) == [0, 2]
    # Batch 0's outcome may wait in the child behind the hanging batch: still never blamed.
    assert tally.tries[0] == 1 and tally.tries[2] == 1


@pytest.mark.parametrize("per_message", [1, 3], ids=["one-per-message", "packed"])
def test_child_crash_costs_a_try(tmp_path: Path, per_message: int) -> None:
    make_files(tmp_path / "data", 3)
    marker = tmp_path / "crashed-once"
    write_script(
        tmp_path / "code",
        f"""
        import os
        def run(mini_batch):
            if any(p.endswith("f00001.txt") for p in mini_batch) and not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                os._exit(3)
            return mini_batch
        """,
    )
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", per_message=per_message, mini_batch_size=1)
    verdict, tally, merged = run_embedded(job, tmp_path / "work")
    assert verdict.state == "succeeded" and list(tally.committed_ids()) == [0, 1, 2]
    assert tally.tries[1] == 2
    assert tally.tries[0] == 1, "the batch before the crash is not charged for it"
    assert merged is not None and len(lines(merged[0])) == 3


def test_init_failure_fails_job_with_its_error(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 3)
    write_script(tmp_path / "code", "def init():\n    raise OSError('model missing')\ndef run(b):\n    return b\n")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", init_max_try=2)
    verdict, _, _ = run_embedded(job, tmp_path / "work")
    assert verdict.state == "failed"
    assert "init() failed" in (verdict.reason or "") and "model missing" in (verdict.reason or "")


@pytest.mark.parametrize("bad", ["None", "42", "'text'"])
def test_bad_return_fails_the_try(tmp_path: Path, bad: str) -> None:
    make_files(tmp_path / "data", 2)
    write_script(tmp_path / "code", f"def run(mini_batch):\n    return {bad}\n")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", run_max_try=1)
    verdict, tally, _ = run_embedded(job, tmp_path / "work")
    assert verdict.state == "succeeded" and list(tally.failed_ids()) == [0]
    assert "return a list, tuple or pandas DataFrame" in (tally.failures[0].error or "")


def test_user_modules_named_like_ours_still_work(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 2)
    code = tmp_path / "code"
    write_script(code, "def tag():\n    return 'user-common'\n", name="common.py")
    write_script(code, "def tag():\n    return 'user-worker'\n", name="worker.py")
    write_script(code, "import common, worker\ndef run(b):\n    return [common.tag() + worker.tag() for _ in b]\n")
    job = make_job(tmp_path, code, tmp_path / "data")
    verdict, _, merged = run_embedded(job, tmp_path / "work")
    assert verdict.state == "succeeded"
    assert merged is not None and set(lines(merged[0])) == {"user-commonuser-worker"}


def test_user_logs_hold_prints_and_errors(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 2)
    write_script(
        tmp_path / "code",
        """
        import logging, os
        from azureml_user.parallel_run import EntryScript
        def run(mini_batch):
            print("hello from run")
            EntryScript().logger.info("logged %d", len(mini_batch))
            logging.getLogger("mine").warning("root logging %d", len(mini_batch))
            with open(os.path.join(EntryScript().log_dir, "own.txt"), "w") as handle:
                handle.write("own file")
            raise KeyError("missing-key")
        """,
    )
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", run_max_try=1, process_count_per_node=1)
    run_embedded(job, tmp_path / "work")
    user = tmp_path / "out" / "logs" / "user"
    # Each file name carries the node process's session token (worker/intake/identity.py).
    [stdout_file] = (user / "stdout" / "n1").glob("process001.*.stdout.txt")
    stdout = stdout_file.read_text()
    assert "[n1 process001 batch=0] hello from run" in stdout
    assert "[n1 process001 batch=0] WARNING mine root logging 2" in stdout, "plain logging goes to stdout"
    entry_log = next((user / "entry_script_log" / "n1").glob("process001.*.log.txt")).read_text()
    assert "logged 2" in entry_log and "root logging" not in entry_log
    assert (user / "entry_script_log" / "n1" / "own.txt").read_text() == "own file", "log_dir is the node's"
    errors = next((user / "error" / "n1").glob("process001.*.txt")).read_text()
    assert "KeyError" in errors and "Traceback" in errors


def test_no_worker_is_a_stall_not_a_hang(tmp_path: Path) -> None:
    from coordinator.follow.follower import Follower
    from coordinator.follow.tally import Tally

    make_files(tmp_path / "data", 3)
    write_script(tmp_path / "code", OK_SCRIPT)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", progress_update_timeout=1)
    broker, batches = submit_in_memory(job)
    verdict = Follower(broker, job, Tally(batches)).follow()
    assert verdict.state == "failed"
    assert "no progress for 1s" in (verdict.reason or "") and "batchfleet worker" in (verdict.reason or "")


def test_busy_worker_is_not_a_stall(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 2)
    write_script(tmp_path / "code", "import time\ndef run(b):\n    time.sleep(3)\n    return b\n")
    job = make_job(
        tmp_path,
        tmp_path / "code",
        tmp_path / "data",
        mini_batch_size=2,
        progress_update_timeout=1.5,
        run_invocation_timeout=20,
    )
    verdict, tally, _ = run_embedded(job, tmp_path / "work")
    assert verdict.state == "succeeded", verdict.reason
    assert tally.committed_count == 1


def test_prints_survive_a_timeout_kill(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 1)
    write_script(
        tmp_path / "code",
        "import time\ndef run(b):\n    print('about to hang', flush=False)\n    time.sleep(60)\n    return b\n",
    )
    job = make_job(
        tmp_path,
        tmp_path / "code",
        tmp_path / "data",
        run_invocation_timeout=1,
        run_max_try=1,
        process_count_per_node=1,
    )
    run_embedded(job, tmp_path / "work")
    stdout = next((tmp_path / "out" / "logs" / "user" / "stdout" / "n1").glob("process001.*.stdout.txt")).read_text()
    assert "[n1 process001 batch=0] about to hang" in stdout


def test_broken_script_takes_no_message(tmp_path: Path) -> None:
    from worker.intake.node import NodeConfig, WorkerNode

    make_files(tmp_path / "data", 4)
    write_script(tmp_path / "code", "def init():\n    raise ValueError('bad model')\ndef run(b):\n    return b\n")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", init_max_try=2, mini_batch_size=1)
    broker, _ = submit_in_memory(job)
    node = WorkerNode(broker, NodeConfig(node_id="n1", work_root=tmp_path / "work"))
    node.start(listen=False)
    node.serve(job)
    try:
        pool = node._jobs[job.job_id].pool
        deadline = time.monotonic() + 30
        while not pool.gave_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.gave_up and not pool.ready.is_set()
    finally:
        node.stop()
    assert broker.depth(f"bf.{job.job_id}.batches") == 4  # nothing taken, no try spent


def test_a_preparing_job_starts_processes_but_takes_nothing_until_active(tmp_path: Path) -> None:
    from common.messages import JobAnnouncement
    from coordinator.follow.follower import Follower
    from coordinator.follow.tally import Tally
    from worker.intake.node import NodeConfig, WorkerNode

    make_files(tmp_path / "data", 4)
    write_script(tmp_path / "code", "def run(b):\n    return b\n")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=1)
    broker, batches = submit_in_memory(job)
    job_uri = str(Path(job.store_uri) / "job.json")

    def announce(state: str) -> None:
        broker.announce(JobAnnouncement(job_id=job.job_id, job_uri=job_uri, state=state).model_dump_json().encode())

    node = WorkerNode(broker, NodeConfig(node_id="n1", work_root=tmp_path / "work", store_roots=(str(tmp_path),)))
    node.start(listen=True)
    try:
        announce("preparing")
        deadline = time.monotonic() + 30
        while not (job.job_id in node.jobs and node._jobs[job.job_id].pool.ready.is_set()):
            assert time.monotonic() < deadline, "the pool never got ready"
            time.sleep(0.05)
        time.sleep(0.5)  # ready, yet waiting for the plan: nothing is taken
        assert broker.depth(f"bf.{job.job_id}.batches") == 4
        announce("active")
        verdict = Follower(broker, job, Tally(batches)).follow()
        assert verdict.state == "succeeded"
    finally:
        node.stop()


def test_a_node_hands_back_packed_batches_beyond_its_window(tmp_path: Path) -> None:
    from coordinator.merger import merge_output

    make_files(tmp_path / "data", 16)
    # The pace stays unknown only until a batch finishes (then the window is recomputed), so no
    # batch may finish before the node has dispatched the whole first pack: run() waits for a gate
    # that opens once the hand-back is seen (or after 30s, for the assertion below to report it).
    gate = tmp_path / "gate"
    write_script(
        tmp_path / "code",
        f"""
        import os, time
        def run(b):
            deadline = time.monotonic() + 30
            while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)
            return b
        """,
    )
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", per_message=8, mini_batch_size=1)
    broker, batches = submit_in_memory(job)
    released: list[bytes] = []
    settle_many = broker.settle_many

    def spy(settles: Any) -> None:
        released.extend(d.body for d, action in settles if action == "release")
        if len(released) >= 2:
            gate.touch()
        settle_many(settles)

    broker.settle_many = spy  # type: ignore[method-assign]
    verdict, tally = serve_and_follow(broker, job, batches, tmp_path / "work")
    assert verdict.state == "succeeded"
    # While its batches' pace is unknown a node holds packed members only up to its window (6 for
    # 2 processes): 2 of the first pack of 8 go back.
    assert len(released) >= 2
    assert set(tally.tries) == {1}, "a hand-back costs no try"
    merged = merge_output(job, tally, StorageOptions())
    assert [Path(line).name for line in lines(merged[0])] == [f"f{i:05d}.txt" for i in range(16)]


def test_fast_packed_batches_beyond_the_window_run_in_their_turn(tmp_path: Path, monkeypatch: Any) -> None:
    """Members past the window wait for the pace instead of going behind the whole queue: fast
    batches run them in order, no copy is published, and the streaming merge never waits for one."""
    monkeypatch.setattr("common.policy.PACKED_PACE", 5.0)  # "fast" on however slow a machine
    monkeypatch.setattr("common.policy.PACKED_WAIT", 60.0)
    make_files(tmp_path / "data", 64)
    write_script(tmp_path / "code", OK_SCRIPT)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", per_message=16, mini_batch_size=1)
    broker, batches = submit_in_memory(job)
    actions: list[str] = []
    acked: list[int] = []
    settle_many = broker.settle_many

    def spy(settles: Any) -> None:
        ours = [(d, action) for d, action in settles if d.queue == f"bf.{job.job_id}.batches"]
        actions.extend(action for _, action in ours)
        acked.extend(json.loads(d.body)["batch_id"] for d, action in ours if action == "ack")
        settle_many(settles)

    broker.settle_many = spy  # type: ignore[method-assign]
    verdict, tally = serve_and_follow(broker, job, batches, tmp_path / "work")
    assert verdict.state == "succeeded"
    assert "release" not in actions, "a fast batch past the window went back to the queue"
    assert set(tally.tries) == {1}
    # The 16 - 6 extras of the first pack ran among the first batches (handed back, they would
    # have come after all 48 of the other packs); the children's pipes may reorder a few.
    assert max(acked.index(batch) for batch in range(6, 16)) < 40, str(acked)


def stopped_midway(tmp_path: Path, job: Any, until: Callable[[Any, Any], bool]) -> tuple[list[str], Any]:
    """Follow `job` while node n1 serves it; once `until(n1, tally)`, stop n1 gracefully and let n2
    finish the job. Returns (the follower's verdicts, the tally)."""
    import threading

    from coordinator.follow.follower import Follower
    from coordinator.follow.tally import Tally
    from worker.intake.node import NodeConfig, WorkerNode

    broker, batches = submit_in_memory(job)
    tally = Tally(batches)
    verdicts: list[str] = []
    follower = threading.Thread(target=lambda: verdicts.append(Follower(broker, job, tally).follow().state))
    first = WorkerNode(broker, NodeConfig(node_id="n1", work_root=tmp_path / "w1"))
    first.start(listen=False)
    first.serve(job)
    follower.start()
    deadline = time.monotonic() + 30
    while not until(first, tally):
        assert time.monotonic() < deadline, "the first node never reached the point to stop it at"
        time.sleep(0.005)
    first.stop(grace=10)
    second = WorkerNode(broker, NodeConfig(node_id="n2", work_root=tmp_path / "w2"))
    second.start(listen=False)
    second.serve(job)
    try:
        follower.join(timeout=60)
    finally:
        second.stop()
    return verdicts, tally


def test_a_graceful_stop_hands_packed_batches_back_without_a_try(tmp_path: Path) -> None:
    from coordinator.merger import merge_output

    make_files(tmp_path / "data", 16)
    write_script(tmp_path / "code", OK_SCRIPT.replace("    return [", "    import time; time.sleep(0.2)\n    return ["))
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", per_message=4, mini_batch_size=1)
    # running batches finish; what the first node holds goes back untried
    verdicts, tally = stopped_midway(tmp_path, job, lambda _node, tally: tally.committed_count >= 2)
    assert verdicts == ["succeeded"]
    assert set(tally.tries) == {1}, "a stop costs no batch a try, nor runs one twice"
    assert tally.duplicates == 0
    assert {name for name, seen in tally.nodes.items() if seen.batches} == {"n1", "n2"}
    merged = merge_output(job, tally, StorageOptions())
    assert lines(merged[0]) == [f"f{i:05d}.txt" for i in range(16)]


def test_a_stop_hands_back_the_extras_still_waiting_for_the_pace(tmp_path: Path, monkeypatch: Any) -> None:
    """Extras are held like any delivery: a stop before the pace is known gives them back untried."""
    from coordinator.merger import merge_output

    monkeypatch.setattr("common.policy.PACKED_WAIT", 60.0)  # still waiting when the stop comes
    make_files(tmp_path / "data", 16)
    write_script(tmp_path / "code", OK_SCRIPT.replace("    return [", "    import time; time.sleep(0.5)\n    return ["))
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", per_message=16, mini_batch_size=1)
    verdicts, tally = stopped_midway(
        tmp_path, job, lambda node, _tally: job.job_id in node.jobs and bool(node._jobs[job.job_id].extras)
    )
    assert verdicts == ["succeeded"]
    assert set(tally.tries) == {1}, "a stop costs no batch a try, nor runs one twice"
    assert tally.duplicates == 0
    assert tally.nodes["n2"].batches >= 10, "the extras went back to the queue for another node"
    merged = merge_output(job, tally, StorageOptions())
    assert lines(merged[0]) == [f"f{i:05d}.txt" for i in range(16)]


def test_the_window_counts_the_mini_batches_messages_really_carry(tmp_path: Path) -> None:
    import shutil

    from common.broker.memory import MemoryBroker
    from coordinator.follow.follower import Follower
    from coordinator.follow.tally import Tally
    from coordinator.plan.submit import publish_plan, write_job, write_plan
    from worker.intake.node import NodeConfig, WorkerNode

    make_files(tmp_path / "data", 96)
    write_script(tmp_path / "code", "def run(b):\n    return b\n")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", per_message=8, mini_batch_size=1)
    broker = MemoryBroker()
    write_job(job, StorageOptions())
    manifest, batches, _ = write_plan(job, StorageOptions())
    broker.declare_job(job.job_id, job.settings.run_max_try)
    # Packs of 8 are expected, but every batch comes alone (as hand-backs and retries do).
    publish_plan(broker, job.model_copy(update={"batches_per_message": 1}), manifest)
    shutil.rmtree(manifest.parent, ignore_errors=True)
    node = WorkerNode(broker, NodeConfig(node_id="n1", work_root=tmp_path / "work"))
    node.start(listen=False)
    node.serve(job)
    try:
        assert Follower(broker, job, Tally(batches)).follow().state == "succeeded"
        runtime = node._jobs[job.job_id]
        # The node learned from its deliveries that a message carries one mini-batch, not eight.
        assert round(1 / runtime.message_share) == 1, runtime.message_share
        # The pace it measured is what a loaded machine made of it: the window is checked at a given
        # fast pace (a millisecond a batch), from a fresh start of the moving average.
        runtime.batch_seconds, runtime.finished = None, 0
        node._tune_prefetch(runtime, 0.001)
        # Fast batches: a window of 2 x 256 mini-batches, which lone messages need as 512 messages
        # (full packs would need 65).
        assert runtime.window == 512 and runtime.prefetch == 512, (runtime.window, runtime.prefetch)
    finally:
        node.stop()


def test_only_tries_that_ran_to_their_end_set_the_pace(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 4)
    # f00000 fails at once, as a child killed just after it started would: no pace to learn from it
    write_script(
        tmp_path / "code",
        """
        import os, time
        def run(b):
            if os.path.basename(b[0]) == "f00000.txt":
                raise ValueError("poison")
            time.sleep(0.05)
            return b
        """,
    )
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=1, run_max_try=1)
    with node_after_job(tmp_path, job) as (_, runtime):
        assert runtime.finished == 3, "the failed try was taken for the batches' pace"
        assert runtime.batch_seconds is not None and runtime.batch_seconds >= 0.05


@contextmanager
def node_after_job(tmp_path: Path, job: Any) -> Iterator[tuple[Any, Any]]:
    """(node, its runtime of `job`) once an embedded node has run the whole job; stopped after."""
    from coordinator.follow.follower import Follower
    from coordinator.follow.tally import Tally
    from worker.intake.node import NodeConfig, WorkerNode

    broker, batches = submit_in_memory(job)
    node = WorkerNode(broker, NodeConfig(node_id="n1", work_root=tmp_path / "work"))
    node.start(listen=False)
    node.serve(job)
    try:
        assert Follower(broker, job, Tally(batches)).follow().state == "succeeded"
        yield node, node._jobs[job.job_id]
    finally:
        node.stop()


def test_the_pace_is_a_batchs_work_not_its_wall_time(tmp_path: Path) -> None:
    # A fast batch's outcome may wait in the child's outbox and pipe, and the node's threads for
    # the GIL: counting that wait made sub-millisecond batches look like 2 ms ones (shallow pipes).
    from worker.run.pool import Task

    make_files(tmp_path / "data", 2)
    write_script(tmp_path / "code", "def run(b):\n    return b\n")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=1)
    with node_after_job(tmp_path, job) as (node, runtime):
        runtime.batch_seconds, runtime.finished = None, 0
        task = Task(0, 1, {"total": 1}, None, download_seconds=0.0002)
        outcome = {"status": "committed", "total": 1, "succeeded": 1, "failed": 0, "started": time.time() - 1.0,
                   "run_seconds": 0.0003, "commit_seconds": 0.0001}  # fmt: skip
        node._finish(runtime, task, outcome, "process001")
        assert runtime.batch_seconds == pytest.approx(0.0006), runtime.batch_seconds
