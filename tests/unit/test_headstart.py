"""A run's head start: children's interpreters spawned ahead (worker/run/standby.py) and local
input folders listed ahead (common/storage/prelist.py) change nothing a job does, only when."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import psutil
import pytest

from batchfleet import headstart
from common.broker.memory import MemoryBroker
from common.storage import StorageOptions
from common.storage.local import LocalStorage
from common.storage.prelist import Prelisted
from coordinator.follow.follower import Follower
from coordinator.follow.tally import Tally
from coordinator.merger import merge_output
from coordinator.plan.submit import publish_plan, write_job, write_plan
from tests.cli_helpers import batchfleet, make_component
from tests.runtime_helpers import make_files, make_job, run_embedded, write_script
from worker.intake.node import NodeConfig, WorkerNode
from worker.run.standby import Standby

WHO = """
import multiprocessing, os

def run(mini_batch):
    me = f"{os.getpid()} {multiprocessing.current_process().name} {os.environ.get('BATCHFLEET_SIGNING_KEY', '-')}"
    return [f"{os.path.basename(p)} {me}" for p in mini_batch]
"""


def test_a_pool_takes_its_children_from_the_standby(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHFLEET_SIGNING_KEY", "not-for-user-code")
    standby = Standby().top_up(2)
    spawned = {process.pid for process, _, _ in standby._waiting}
    try:
        job = make_job(tmp_path, write_script(tmp_path / "code", WHO).parent, tmp_path / "in", mini_batch_size=1)
        make_files(tmp_path / "in", 6)
        verdict, _, _ = run_embedded(job, tmp_path / "work", standby)
    finally:
        standby.close()
    assert verdict.state == "succeeded" and standby.waiting == 0
    rows = [line.split() for line in (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()]
    assert len(rows) == 6
    assert {int(pid) for _, pid, _, _ in rows} <= spawned  # no fresh spawn
    assert {name for _, _, name, _ in rows} <= {"batchfleet-process001", "batchfleet-process002"}
    assert {key for *_, key in rows} == {"-"}  # spawned with batchfleet's secrets withheld


def test_waiting_standbys_are_stopped_at_once(tmp_path: Path) -> None:
    standby = Standby().top_up(2)
    processes = [process for process, _, _ in standby._waiting]
    began = time.monotonic()
    standby.close()
    assert not any(process.is_alive() for process in processes)
    assert time.monotonic() - began < 5 and standby.waiting == 0
    assert standby.take("process001", {}) is None


def test_a_dead_standby_is_passed_over(tmp_path: Path) -> None:
    standby = Standby().top_up(2)
    try:
        first, second = [process for process, _, _ in standby._waiting]
        first.kill()
        first.join(5)
        taken = standby.take("process001", {"never": "used"})
        assert taken is not None and taken[0] is second
        taken[1].close()  # the spec is not a child's: it fails and exits
        second.join(10)
        assert not second.is_alive()
    finally:
        standby.close()


def test_top_up_starts_only_what_is_missing() -> None:
    standby = Standby().top_up(1)
    try:
        assert standby.top_up(1).waiting == 1
        assert standby.top_up(2).waiting == 2
    finally:
        standby.close()


def test_a_run_that_fails_early_leaves_no_standby_or_lister_behind(tmp_path: Path) -> None:
    import logging

    from batchfleet.cli import main

    spec = make_component(tmp_path / "c")
    handlers, level = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        code = main(
            [
                "run",
                str(spec),
                "--input",
                f"data={tmp_path / 'c' / 'data'}",
                "--output",
                f"scored={tmp_path}/o",
                "--store",
                str(tmp_path / "store"),
                "--process_count_per_node",
                "2",
                "--mini_batch_size",
                "zero",
            ]
        )
    finally:
        logging.getLogger().handlers[:] = handlers
        logging.getLogger().setLevel(level)
    assert code == 2
    assert not multiprocessing.active_children()  # the standbys, killed
    assert not [p for p in psutil.Process().children() if "walker.py" in " ".join(p.cmdline())]  # nor a lister


def test_a_run_with_standbys_and_a_prelisted_input_scores_every_item(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "c", files=25)
    out = tmp_path / "o"
    result = batchfleet(
        "run",
        spec,
        "--input",
        "data=c/data",
        "--output",
        f"scored={out}",
        "--store",
        tmp_path / "store",
        "--process_count_per_node",
        "2",
        "--mini_batch_size",
        "3",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert sorted((out / "parallel_run_step.txt").read_text().split()) == [f"item{i:03d}.txt" for i in range(25)]


# listing ahead


def tree(root: Path) -> Path:
    for sub in ("", "b", "a/deep"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / sub / f"f{i}.txt").write_text("x")
    return root


def test_a_prelisted_folder_lists_as_the_storage_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    prelisted = Prelisted()
    prelisted.start("in/")  # relative, with a slash: the spec makes the same folder absolute
    try:
        assert str(root) in prelisted
        runs = prelisted.take(str(root))
        assert runs is not None and list(runs) == list(LocalStorage().list_names(str(root)))
        assert prelisted.take(str(root)) is None  # taken once
    finally:
        prelisted.close()


@pytest.mark.parametrize("what", ["missing", "file", "s3://bucket/prefix", "azureml:data:1"])
def test_only_local_folders_are_listed_ahead(tmp_path: Path, what: str) -> None:
    (tmp_path / "file").write_text("x")
    path = str(tmp_path / what) if what in ("missing", "file") else what
    prelisted = Prelisted()
    prelisted.start(path)
    assert path not in prelisted and prelisted.take(path) is None
    prelisted.close()


def test_a_listing_not_taken_is_stopped(tmp_path: Path) -> None:
    prelisted = Prelisted()
    prelisted.start(str(tree(tmp_path / "in")))
    procs = list(prelisted._walks.values())
    prelisted.close()
    assert len(procs) == 1 and procs[0].poll() is not None and not prelisted._walks


def test_a_plan_from_a_prelisted_folder_is_the_same_plan(tmp_path: Path) -> None:
    data = tree(tmp_path / "in")
    code = write_script(tmp_path / "code", WHO).parent
    job = make_job(tmp_path, code, data, mini_batch_size=2)
    plain, _, _ = write_plan(job, StorageOptions())
    expected = plain.read_bytes()
    prelisted = Prelisted()
    prelisted.start(str(data))
    try:
        ahead, batches, items = write_plan(job, StorageOptions(), prelisted=prelisted)
        assert ahead.read_bytes() == expected and (batches, items) == (5, 9)
        assert str(data) not in prelisted  # the planner took it
        assert [json.loads(line)["batch_id"] for line in expected.splitlines()] == list(range(5))
    finally:
        prelisted.close()
    assert os.path.exists(ahead)


def test_a_service_node_keeps_interpreters_warm_across_jobs(tmp_path: Path) -> None:
    broker = MemoryBroker()
    standby = Standby()
    config = NodeConfig(node_id="n1", work_root=tmp_path / "work", processes=2, heartbeat_interval=0.5)
    node = WorkerNode(broker, config, standby, keep_warm=True)
    node.start(listen=False)
    try:
        code = write_script(tmp_path / "code", WHO).parent
        make_files(tmp_path / "in", 4)
        for number in (1, 2):
            warm = {process.pid for process, _, _ in standby._waiting}
            assert len(warm) == 2
            job = make_job(tmp_path / f"job{number}", code, tmp_path / "in", job_id=f"job-{number}")
            write_job(job, StorageOptions())
            manifest, batches, _ = write_plan(job, StorageOptions())
            broker.declare_job(job.job_id, job.settings.run_max_try)
            publish_plan(broker, job, manifest)
            node.serve(job)
            tally = Tally(batches)
            assert Follower(broker, job, tally).follow().state == "succeeded"
            node.end(job.job_id)
            assert merge_output(job, tally, StorageOptions()) is not None
            merged = (tmp_path / f"job{number}" / "out" / "parallel_run_step.txt").read_text().splitlines()
            assert {int(line.split()[1]) for line in merged} <= warm  # the job's children were the warm ones
            assert standby.waiting == 2 and not warm & {p.pid for p, _, _ in standby._waiting}  # refilled
    finally:
        node.stop()
    assert standby.waiting == 0 and not multiprocessing.active_children()


# the guesses batchfleet.cli makes from the command line alone


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "c.yaml", "--process_count_per_node", "3"], 3),
        (["run", "c.yaml", "--process-count-per-node=4"], 4),
        (["run", "c.yaml", "--process_count_per_node", "2", "--process_count_per_node", "1"], 1),  # argparse: last
        (["run", "c.yaml", "--process_count_per_node", "many"], 0),  # the spec check says what is wrong
        (["run", "c.yaml", "--process_count_per_node", "-2"], 0),
        (["run", "c.yaml", "--process_count_per_node", "500"], headstart.MAX_GUESSED),
        (["run", "c.yaml"], min(os.cpu_count() or 1, headstart.MAX_GUESSED)),
        (["run", "c.yaml", "--", "--process_count_per_node", "3"], min(os.cpu_count() or 1, headstart.MAX_GUESSED)),
    ],
)
def test_the_guessed_child_count(argv: list[str], expected: int) -> None:
    assert headstart.guessed_processes(argv) == expected


def test_the_input_folders_listed_ahead(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "f.txt").write_text("x")
    argv = ["run", "c.yaml", "--input", f"x={tmp_path / 'a'}", "-i", f"y={tmp_path / 'b'}:direct",
            f"--input=z={tmp_path / 'a'}:tabular", "--input", f"w={tmp_path / 'f.txt'}", "--input", "s=s3://b/p",
            "--input", f"m={tmp_path / 'missing'}", "--output", f"o={tmp_path / 'a'}"]  # fmt: skip
    assert headstart.input_folders(argv) == [str(tmp_path / "a"), str(tmp_path / "b")]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["status", "job"],
        ["run", "c.yaml", "--resume", "job"],
        ["run", "c.yaml", "--detach"],
        ["validate", "c.yaml"],
    ],
)
def test_no_head_start_but_for_a_run(argv: list[str]) -> None:
    assert headstart.start(argv, {}) is None


def test_a_fleet_run_lists_ahead_but_starts_no_standby(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for argv, env in (
        (["run", "c.yaml", "--broker", "amqp://h", "--input", f"x={tmp_path / 'in'}"], {}),
        (["run", "c.yaml", "--input", f"x={tmp_path / 'in'}"], {"BATCHFLEET_BROKER": "amqp://h"}),
    ):
        head = headstart.start(argv, env)
        assert head is not None
        try:
            assert head.standby is None and str(tmp_path / "in") in head.prelisted
        finally:
            head.close()


@pytest.mark.parametrize(
    ("text", "pipeline"),
    [
        ("type: pipeline\njobs: {}\n", True),
        ("$schema: x\ntype: 'pipeline'  # steps below\n", True),
        ("type: parallel\n", False),
        ("jobs:\n  a:\n    type: pipeline\n", False),  # not at the top level
        ("type: ParallelComponent\n", False),
    ],
)
def test_a_pipeline_starts_no_standby(tmp_path: Path, text: str, pipeline: bool) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    argv = ["run", str(spec), "--process_count_per_node", "1"]
    assert headstart.looks_like_pipeline(argv) is pipeline
    head = headstart.start(argv, {})
    assert head is not None
    try:
        assert (head.standby is None) is pipeline
    finally:
        head.close()


def test_no_spec_file_is_no_pipeline() -> None:
    assert not headstart.looks_like_pipeline(["run", "/no/such/spec.yaml"])
    assert not headstart.looks_like_pipeline(["run", "--process_count_per_node", "1"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_in_the_command_line_is_never_read(tmp_path: Path) -> None:
    fifo = tmp_path / "settings.yaml"
    os.mkfifo(fifo)  # `--config <(...)`: reading it here would drain (or, with no writer, block) it
    assert not headstart.looks_like_pipeline(["run", "--config", str(fifo), str(tmp_path / "c.yaml")])


def test_a_closed_standby_starts_nothing_more() -> None:
    standby = Standby().top_up(1)
    standby.close()
    assert standby.top_up(2).waiting == 0
    assert not multiprocessing.active_children()


def test_a_head_start_that_cannot_start_processes_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Standby) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    (tmp_path / "in").mkdir()
    monkeypatch.setattr(Standby, "_start", refuse)
    assert headstart.start(["run", "c.yaml", "--input", f"x={tmp_path / 'in'}"], {}) is None
    assert not [p for p in psutil.Process().children() if "walker.py" in " ".join(p.cmdline())]
