"""Secure by default: no key, no fleet (unless --insecure, which is then said everywhere); and even an
unsigned fleet reads parts only from the job's area and merges only frames of the right batch."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import run_cli, start_worker, stop, wait_for
from tests.integration.fault_helpers import (
    Coordinator,
    fleet_run_args,
    fleet_setup,
    job_ids,
    make_code,
    one_error_line,
    put_items,
    read_text,
)
from tests.security.conftest import Hostile, forged_result, log_text
from tests.servers import MotoS3

pytestmark = pytest.mark.security

INSECURE_SAID = "runs without a signing key (--insecure)"


@pytest.mark.parametrize("command", ["worker", "run"])
def test_a_fleet_member_without_a_key_exits_2_with_one_line(
    tmp_path: Path, rabbitmq: Any, s3: MotoS3, command: str
) -> None:
    fleet = fleet_setup(tmp_path, rabbitmq.url, s3, BATCHFLEET_INSECURE="")  # no key, not insecure
    put_items(s3, fleet["bucket"], 2)
    if command == "worker":
        args = ["--broker", fleet["url"], "--work-dir", str(tmp_path / "w")]
    else:
        args = fleet_run_args(make_code(tmp_path / "code"), fleet)
    result = run_cli(command, *args, env=fleet["env"], timeout=60)
    line = one_error_line(result)
    assert result.returncode == 2, line
    assert "on a fleet needs a signing key" in line and "--insecure" in line, line
    assert job_ids(s3, fleet["store"]) == [], "a job area was created"


@pytest.fixture
def insecure(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> dict[str, Any]:
    fleet = fleet_setup(tmp_path, rabbitmq.url, s3, BATCHFLEET_INSECURE="1")
    fleet["names"] = put_items(s3, fleet["bucket"], 12)
    fleet["secret"] = f"TOP-SECRET-{uuid.uuid4().hex}"
    fleet["secret_file"] = tmp_path / "secret.txt"
    fleet["secret_file"].write_text(f"{fleet['secret']}\n" * 20)
    return fleet


def gated_run(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3, attack: Callable[[str], None]) -> tuple[Any, str]:
    """A gated job on one insecure worker; `attack(job)` runs while the last batch is held.
    Returns the coordinator's result and the worker's log."""
    gate = fleet["gate"]
    spec = make_code(tmp_path / "code", gate.root, gate_item=fleet["names"][-1])
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1)
    run = Coordinator(fleet_run_args(spec, fleet, "--mini_batch_size", "2"), fleet["env"], tmp_path / "coord")
    try:
        gate.wait_started()
        job = job_ids(s3, fleet["store"])[0]
        attack(job)
        gate.open()
        result = run.finish()
    finally:
        run.close()
        stop(worker)
    return result, log_text(tmp_path / "workers" / "node-a.log")


def test_an_insecure_fleet_says_so_and_still_reads_parts_only_from_the_job_area(
    tmp_path: Path, insecure: dict[str, Any], hostile: Hostile, s3: MotoS3
) -> None:
    """Unsigned forged "committed" reports (the issue's attack) still cannot point the merge at a file
    outside the job's parts/ folder, nor at a batch that is not in the plan."""
    fleet, size = insecure, len(insecure["secret_file"].read_bytes())

    def attack(job: str) -> None:
        parts = [f"{fleet['secret_file']}#0+{size}", f"{fleet['store']}/{job}/job.json#0+{size}",
                 f"{fleet['store']}/{job}/parts/../../../secret.txt#0+{size}"]  # fmt: skip
        forged = [forged_result(job, 5, part) for part in parts]
        forged += [forged_result(job, batch, f"{fleet['store']}/{job}/parts/x#0+1") for batch in (6, 999, -1)]
        hostile.publish(f"bf.{job}.reports", forged)

    result, worker_log = gated_run(tmp_path, fleet, s3, attack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6/6 mini-batches committed, 0 failed; 12 items succeeded, 0 failed" in result.stdout
    merged = read_text(s3, f"{fleet['output']}/parallel_run_step.txt").splitlines()
    assert merged == [f"{name} value-{i}" for i, name in enumerate(fleet["names"])]
    assert fleet["secret"] not in "\n".join(merged)
    job_result = read_text(s3, f"{fleet['output']}/logs/job_result.txt")
    assert "report of a part outside the job area: 3" in job_result, job_result
    assert "report on a batch not in the plan: 3" in job_result, job_result
    # Said once at start by each process, and in the job's report.
    assert result.stderr.count(INSECURE_SAID) == 1 and worker_log.count(INSECURE_SAID) == 1
    assert "Security: UNSIGNED (--insecure)" in job_result
    assert "Unsigned fleet run (--insecure)" in read_text(s3, f"{fleet['output']}/logs/report.html")


def test_an_insecure_fleet_never_merges_another_batchs_frame(
    tmp_path: Path, insecure: dict[str, Any], hostile: Hostile, s3: MotoS3
) -> None:
    """A forged report naming a genuine part of the job, but of another batch, fails the job at the
    merge (the frame's header names its own batch) rather than writing wrong rows."""
    fleet = insecure
    bucket = fleet["bucket"].removeprefix("s3://")

    def attack(job: str) -> None:
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"store/{job}/parts/")
        key = next(o["Key"] for o in listed["Contents"] if o["Key"].endswith(".part"))
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        head = body.index(b"\n") + 1
        hostile.publish(f"bf.{job}.reports", [forged_result(job, 5, f"s3://{bucket}/{key}#{head}+{len(body) - head}")])

    result, _ = gated_run(tmp_path, fleet, s3, attack)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refusing to merge it" in result.stderr and "of batch 5 holds batch" in result.stderr, result.stderr
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="out/parallel_run_step")
    assert listed.get("KeyCount", 0) == 0, "rows that are not batch 5's were merged"
    assert "failed" in read_text(s3, f"{fleet['output']}/logs/job_result.txt")


def test_an_ended_announcement_stops_no_job_whose_area_says_it_runs(
    tmp_path: Path, insecure: dict[str, Any], hostile: Hostile, s3: MotoS3
) -> None:
    """Without signatures a forged "ended" is believed only if the job's area holds its ended marker
    (the coordinator writes it first); the same check stops a replayed signed one for a resumed job."""
    fleet = insecure
    log = tmp_path / "workers" / "node-a.log"

    def attack(job: str) -> None:
        hostile.announce(job, f"{fleet['store']}/{job}/job.json", "ended")
        assert wait_for(lambda: "ended announcement of a running job" in log_text(log), 30), log_text(log)

    result, worker_log = gated_run(tmp_path, fleet, s3, attack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6/6 mini-batches committed, 0 failed; 12 items succeeded, 0 failed" in result.stdout
    merged = read_text(s3, f"{fleet['output']}/parallel_run_step.txt").splitlines()
    assert merged == [f"{name} value-{i}" for i, name in enumerate(fleet["names"])]
    assert worker_log.count("stopped serving job") == 1, "only the coordinator's own end stopped it"
