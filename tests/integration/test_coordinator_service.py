"""The coordinator as a service: jobs submitted through the broker, several at once, restart-safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fleet_helpers import COMPONENT, fleet_env, run_cli, stop, wait_for, workers

pytestmark = pytest.mark.integration

SLOW_ENTRY = """\
import os, time
def run(mini_batch):
    time.sleep(0.05)
    return [os.path.basename(p) for p in mini_batch]
"""


def make_job_dir(root: Path, files: int) -> Path:
    (root / "data").mkdir(parents=True)
    for i in range(files):
        (root / "data" / f"item{i:03d}.txt").write_text(str(i))
    (root / "component.yaml").write_text(COMPONENT)
    (root / "entry.py").write_text(SLOW_ENTRY)
    return root / "component.yaml"


def start_coordinator(url: str, store: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchfleet",
                "coordinator",
                "--broker",
                url,
                "--store",
                str(store),
                "--log-level",
                "INFO",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def state(store: Path, job_id: str) -> dict:
    path = store / job_id / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def submit(url: str, store: Path, spec: Path, out: Path, env: dict[str, str]) -> str:
    result = run_cli(
        "submit",
        spec,
        "--broker",
        url,
        "--store",
        store,
        "--input",
        f"data={spec.parent / 'data'}",
        "--output",
        f"out={out}",
        "--mini_batch_size",
        "2",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_service_runs_two_jobs_and_survives_restart(tmp_path: Path, rabbitmq) -> None:
    store = tmp_path / "store"
    env = fleet_env(BATCHFLEET_STORE=str(store))
    specs = [make_job_dir(tmp_path / f"job{i}", files=40) for i in range(2)]
    coordinator = start_coordinator(rabbitmq.url, store, tmp_path / "coordinator.log", env)
    try:
        with workers(rabbitmq.url, tmp_path / "workers", env, ["w1"]):
            ids = [submit(rabbitmq.url, store, spec, tmp_path / f"out{i}", env) for i, spec in enumerate(specs)]
            assert wait_for(lambda: state(store, ids[0]).get("batches_committed", 0) >= 3, timeout=60)
            os.killpg(coordinator.pid, signal.SIGKILL)
            coordinator.wait(10)
            coordinator = start_coordinator(rabbitmq.url, store, tmp_path / "coordinator2.log", env)
            done = wait_for(lambda: all(state(store, j).get("state") == "succeeded" for j in ids), timeout=120)
            assert done, [state(store, j).get("state") for j in ids]
    finally:
        stop(coordinator)
    for i in range(2):
        merged = (tmp_path / f"out{i}" / "parallel_run_step.txt").read_text().splitlines()
        assert merged == [f"item{k:03d}.txt" for k in range(40)]


def submit_cli(url: str, store: Path, spec: Path, out: Path, env: dict[str, str], *flags: str):  # type: ignore[no-untyped-def]
    return run_cli(
        "submit", spec, "--broker", url, "--store", store, "--input", f"data={spec.parent / 'data'}",
        "--output", f"out={out}", *flags, env=env, timeout=120,
    )  # fmt: skip


def test_submit_waits_for_the_coordinator_and_reports_its_refusal(tmp_path: Path, rabbitmq) -> None:
    from common.broker.rabbitmq.broker import RabbitBroker
    from coordinator.service import submissions_queue

    env = fleet_env()
    store, wrong = tmp_path / "store", tmp_path / "not-the-store"
    spec = make_job_dir(tmp_path / "job", files=4)
    coordinator = start_coordinator(rabbitmq.url, store, tmp_path / "coordinator.log", env)
    try:
        refused = submit_cli(rabbitmq.url, wrong, spec, tmp_path / "out0", env, "--submit-wait", "30")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        [line] = [x for x in refused.stderr.splitlines() if x.startswith("batchfleet: error:")]
        assert "refused job" in line and f"this coordinator's store {store}" in line, line
        assert f"submit with --store {store}" in line and "Traceback" not in refused.stderr
        assert refused.stdout == "" and not any(wrong.iterdir())  # nothing left behind for a job that never runs
        accepted = submit_cli(rabbitmq.url, store, spec, tmp_path / "out1", env, "--submit-wait", "30")
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        job_id = accepted.stdout.strip()
        assert f"job {job_id} accepted by coordinator" in accepted.stderr and ": running" in accepted.stderr
        assert (store / job_id / "job.json").is_file()
    finally:
        stop(coordinator)
    try:
        started = time.monotonic()
        silent = submit_cli(rabbitmq.url, store, spec, tmp_path / "out2", env, "--submit-wait", "2")
        assert silent.returncode == 1 and time.monotonic() - started < 60
        assert "no coordinator answered within 2s" in silent.stderr, silent.stderr
        assert (store / silent.stdout.strip() / "job.json").is_file()  # kept: it runs when a coordinator starts
        fire = submit_cli(rabbitmq.url, store, spec, tmp_path / "out3", env, "--no-wait")
        assert fire.returncode == 0 and fire.stdout.strip(), fire.stderr
    finally:
        leftover = RabbitBroker(rabbitmq.url)
        try:
            leftover.purge(submissions_queue())  # no later test's coordinator should meet these
        finally:
            leftover.close()
