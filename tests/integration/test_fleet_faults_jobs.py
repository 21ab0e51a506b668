"""Fleet faults around a job: missing buckets, unwritable store, inputs lost mid-job, bad messages, tampered code."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import run_cli, start_worker, stop, wait_for
from tests.integration.fault_helpers import (
    Coordinator,
    done_files,
    fleet_run_args,
    fleet_setup,
    follower_log,
    job_ids,
    make_code,
    one_error_line,
    publish_raw,
    put_items,
    read_text,
    wait_for_state,
)
from tests.servers import MotoS3

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> dict[str, Any]:
    return fleet_setup(tmp_path, rabbitmq.url, s3)


# Storage faults before anything runs


def test_input_bucket_missing(tmp_path: Path, fleet: dict[str, Any]) -> None:
    spec = make_code(tmp_path / "code")
    missing = f"bf-missing-{uuid.uuid4().hex[:8]}"
    args = fleet_run_args(spec, fleet)
    args[args.index(f"data={fleet['bucket']}/in")] = f"data=s3://{missing}/in"
    result = run_cli("run", *args, env=fleet["env"], timeout=120)
    line = one_error_line(result)
    assert f"bucket {missing} does not exist" in line, line
    assert "input data" in line, line
    # An input that is not there is an input error (exit 2), as for a missing local folder or empty prefix.
    assert result.returncode == 2, line


def test_output_bucket_missing(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    spec = make_code(tmp_path / "code")
    put_items(s3, fleet["bucket"], 3)
    missing = f"bf-missing-{uuid.uuid4().hex[:8]}"
    args = fleet_run_args(spec, fleet)
    args[args.index(f"out={fleet['output']}")] = f"out=s3://{missing}/out"
    result = run_cli("run", *args, env=fleet["env"], timeout=120)
    line = one_error_line(result)
    assert result.returncode == 2
    assert f"bucket {missing} does not exist" in line, line


@pytest.mark.parametrize("where", ["s3-bucket-missing", "local-under-a-file"])
def test_store_not_writable(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3, where: str) -> None:
    spec = make_code(tmp_path / "code")
    put_items(s3, fleet["bucket"], 3)
    if where == "s3-bucket-missing":
        missing = f"bf-missing-{uuid.uuid4().hex[:8]}"
        store, expected = f"s3://{missing}/store", f"bucket {missing} does not exist"
    else:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        store, expected = str(blocker / "store"), f"{blocker}"
    args = fleet_run_args(spec, {**fleet, "store": store})
    result = run_cli("run", *args, env=fleet["env"], timeout=120)
    line = one_error_line(result)
    assert result.returncode == 1, line
    assert expected in line, line


# Faults while a job runs


def test_object_gone_or_denied_at_download(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    """Inputs deleted or denied after planning fail their items; the worker lives on; the rest completes.

    Both faults happen between planning and the first download: the worker starts after them.
    The denial is a bucket policy on one object (moto enforces it on GetObject, not on listing).
    """
    names = put_items(s3, fleet["bucket"], 12)
    spec = make_code(tmp_path / "code")
    gone, denied = names[10], names[7]
    bucket = fleet["bucket"].removeprefix("s3://")
    run = Coordinator(fleet_run_args(spec, fleet, "--mini_batch_size", "3"), fleet["env"], tmp_path / "coord")
    worker = None
    try:
        assert wait_for(lambda: published(s3, fleet["store"]), 60), "the job was never published"
        s3.client().delete_object(Bucket=bucket, Key=f"in/{gone}")
        deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/in/{denied}"}  # fmt: skip
        s3.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))
        worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1)
        result = run.finish()
        assert worker.poll() is None, "the worker died"
    finally:
        run.close()
        if worker is not None:
            stop(worker)
        s3.client().delete_bucket_policy(Bucket=bucket)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 items succeeded, 2 failed" in result.stdout, result.stdout + result.stderr
    lost = {gone, denied}
    merged = read_text(s3, f"{fleet['output']}/parallel_run_step.txt").splitlines()
    assert merged == [f"{name} value-{i}" for i, name in enumerate(names) if name not in lost]
    assert done_files(s3, fleet["output"]) == {f"{n}.done" for n in names if n not in lost}
    report = read_text(s3, f"{fleet['output']}/logs/sys/job_report/processed_mini-batches.csv")
    rows = list(csv.DictReader(report.splitlines()))
    partial = {row["batch_id"]: row for row in rows if row["status"] != "succeeded"}
    assert sorted((k, row["status"], row["failed"]) for k, row in partial.items()) == [
        ("2", "partial", "1"), ("3", "partial", "1")], rows  # fmt: skip
    assert partial["2"]["error"].startswith(f"{denied}: access denied to "), partial
    assert partial["3"]["error"].startswith(f"{gone}: ") and "is gone" in partial["3"]["error"], partial
    assert "Traceback" not in (tmp_path / "workers" / "node-a.log").read_text()


def published(s3: MotoS3, store: str) -> bool:
    """True once the (only) job under `store` has its plan on the queue."""
    jobs = job_ids(s3, store)
    if not jobs:
        return False
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{jobs[0]}/published")
    return bool(listed.get("KeyCount"))


def test_unparseable_message_is_dead_lettered(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    names = put_items(s3, fleet["bucket"], 12)
    gate = fleet["gate"]
    # Gate the last batch: the bad messages queue behind every real one and arrive while it waits.
    spec = make_code(tmp_path / "code", gate.root, gate_item=names[-1])
    log = tmp_path / "workers" / "node-a.log"
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1)
    run = Coordinator(fleet_run_args(spec, fleet, "--mini_batch_size", "3"), fleet["env"], tmp_path / "coord")
    bad = [b"this is not json", b'{"v": 1, "job_id": "x"}', b"\xff\xfe\x00"]
    try:
        gate.wait_started()
        job = job_ids(s3, fleet["store"])[0]
        publish_raw(fleet["url"], f"bf.{job}.batches", bad)
        assert wait_for(lambda: log.read_text().count("dead-lettering a message") >= len(bad), 30), log.read_text()
        gate.open()
        result = run.finish()
        assert worker.poll() is None, "the worker died"
    finally:
        run.close()
        stop(worker)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 items succeeded, 0 failed" in result.stdout
    merged = read_text(s3, f"{fleet['output']}/parallel_run_step.txt").splitlines()
    assert merged == [f"{name} value-{i}" for i, name in enumerate(names)]
    worker_log = log.read_text()
    assert "Traceback" not in worker_log
    assert f"dead-lettering a message on bf.{job}.batches: unparseable batch message" in worker_log
    # The coordinator follows the dead queue: each bad message arrived there with the worker's reason,
    # the first was logged and every one counted in the job's result.
    reasons = [line for line in result.stderr.splitlines() if "unparseable batch message" in line]
    assert len(reasons) == 1, result.stderr
    job_result = read_text(s3, f"{fleet['output']}/logs/job_result.txt")
    assert f"batch message refused as unparseable: {len(bad)}" in job_result, job_result


def test_snapshot_hash_mismatch(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    put_items(s3, fleet["bucket"], 6)
    spec = make_code(tmp_path / "code")
    env = fleet["env"]
    submitted = run_cli("run", *fleet_run_args(spec, fleet, "--detach"), env=env, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().splitlines()[0]
    bucket = fleet["bucket"].removeprefix("s3://")
    code_uri = json.loads(read_text(s3, f"{fleet['store']}/{job}/job.json"))["code_uri"]
    key = code_uri.removeprefix(f"s3://{bucket}/") + "/entry.py"  # the content-addressed snapshot
    tampered = read_text(s3, f"s3://{bucket}/{key}") + "\nimport os\nos.system('echo owned')\n"
    s3.client().put_object(Bucket=bucket, Key=key, Body=tampered.encode())
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", env, 1)
    follower = follower_log(job)
    try:
        state = wait_for_state(job, fleet["store"], env, timeout=90)
        assert worker.poll() is None, "the worker died"
        assert wait_for(lambda: "batchfleet: error: " in follower.read_text(), 30), follower.read_text()
        ended = follower.read_text()
    finally:
        stop(worker)
        follower.unlink(missing_ok=True)
    assert state["state"] == "failed", state
    assert "refused the job: code snapshot" in state["reason"] and "does not match" in state["reason"], state
    assert "Traceback" not in ended
    errors = [line for line in ended.splitlines() if line.startswith("batchfleet: error: ")]
    assert len(errors) == 1 and "refused the job: code snapshot" in errors[0], ended
    assert done_files(s3, fleet["output"]) == set(), "the tampered code ran"
    assert "Traceback" not in (tmp_path / "workers" / "node-a.log").read_text()
