"""Signed jobs, forged and replayed messages, unsafe object keys, and secrets in what a job writes."""

from __future__ import annotations

import csv
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.messages import BatchMessage, Item
from common.signing import sign_batch
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
from tests.security.conftest import write_key
from tests.servers import MotoS3

pytestmark = pytest.mark.security
PASSWORD_AND_INSECURE = ("the broker password given with --broker is visible", "without a signing key (--insecure)")


@pytest.fixture
def fleet(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> dict[str, Any]:
    # Keys come from flags here, so the environment names none (it would win over nothing, but
    # a process given none at all must be one that runs --insecure on purpose).
    setup = fleet_setup(tmp_path, rabbitmq.url, s3, BATCHFLEET_INSECURE="1")
    setup["key_file"] = tmp_path / "fleet.key"
    setup["key"] = write_key(setup["key_file"])
    return setup


def signed(fleet: dict[str, Any]) -> list[str]:
    return ["--signing-key-file", str(fleet["key_file"])]


def merged_lines(s3: MotoS3, fleet: dict[str, Any]) -> list[str]:
    return read_text(s3, f"{fleet['output']}/parallel_run_step.txt").splitlines()


def test_signed_job_runs(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    names = put_items(s3, fleet["bucket"], 12)
    spec = make_code(tmp_path / "code")
    logs = tmp_path / "workers"
    by_flag = start_worker(fleet["url"], "node-a", logs, fleet["env"], 1, *signed(fleet))
    env_b = {**fleet["env"], "BATCHFLEET_SIGNING_KEY_FILE": str(fleet["key_file"])}
    by_env = start_worker(fleet["url"], "node-b", logs, env_b, 1)
    try:
        # Both must hear the announcement: a node started after it joins only at the next one.
        for node in ("node-a", "node-b"):
            assert wait_for(lambda: "ready (pid" in (logs / f"{node}.log").read_text(), 60), node  # noqa: B023
        args = fleet_run_args(spec, fleet, "--mini_batch_size", "2", *signed(fleet))
        result = run_cli("run", *args, env=fleet["env"], timeout=180)
    finally:
        stop(by_flag)
        stop(by_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert merged_lines(s3, fleet) == [f"{name} value-{i}" for i, name in enumerate(names)]
    job = job_ids(s3, fleet["store"])[0]
    for node in ("node-a", "node-b"):
        log = (logs / f"{node}.log").read_text()
        assert f"serving job {job}" in log, log
        assert "refusing" not in log and "dead-lettering" not in log, log


def forged_messages(job: str, bucket: str, gated_batch: int) -> list[tuple[str, bytes]]:
    """(expected reason, body): what someone without the fleet's key could publish."""
    evil = Item(uri=f"{bucket}/evil/evil.txt", name="evil.txt")
    unsigned = BatchMessage(job_id=job, batch_id=gated_batch, input="data", items=[evil])
    bogus = BatchMessage(job_id=job, batch_id=999, input="data", items=[evil], sig="v1:" + "0" * 64)
    attacker = sign_batch(
        b"an-attacker-key-of-32-bytes-long", BatchMessage(job_id=job, batch_id=1, input="data", items=[evil])
    )
    return [
        ("is unsigned", unsigned.model_dump_json().encode()),
        ("is forged", bogus.model_dump_json().encode()),
        ("is forged", attacker.model_dump_json().encode()),
    ]


def test_forged_messages_run_nothing(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    """Messages published without the key are dead-lettered and run nothing; the job is unharmed.

    Also published straight to the job's dead queue, claiming the broker's delivery limit: such a
    message must not count as (or stand in for) one of the job's batches either.
    """
    names = put_items(s3, fleet["bucket"], 12)
    bucket = fleet["bucket"].removeprefix("s3://")
    s3.client().put_object(Bucket=bucket, Key="evil/evil.txt", Body=b"owned")
    gate = fleet["gate"]
    spec = make_code(tmp_path / "code", gate.root, gate_item=names[-1])
    log = tmp_path / "workers" / "node-a.log"
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1, *signed(fleet))
    args = fleet_run_args(spec, fleet, "--mini_batch_size", "2", *signed(fleet))
    run = Coordinator(args, fleet["env"], tmp_path / "coord")
    try:
        gate.wait_started()
        job = job_ids(s3, fleet["store"])[0]
        forged = forged_messages(job, fleet["bucket"], gated_batch=5)
        publish_raw(fleet["url"], f"bf.{job}.batches", [body for _, body in forged])
        # Straight into the dead queue too, dressed as batches the broker gave up on.
        spoofed = [body for _, body in forged[:2]]
        publish_raw(fleet["url"], f"bf.{job}.dead", spoofed, {"x-batchfleet-reason": "delivery_limit"})
        publish_raw(fleet["url"], f"bf.{job}.dead", spoofed, {"x-first-death-reason": "delivery_limit"})
        assert wait_for(lambda: log.read_text().count("dead-lettering batch") >= len(forged), 30), log.read_text()
        gate.open()
        result = run.finish()
        assert worker.poll() is None, "the worker died"
    finally:
        run.close()
        stop(worker)
    assert "evil.txt.done" not in done_files(s3, fleet["output"]), "a forged message ran"
    worker_log = log.read_text()
    dead = [line for line in worker_log.splitlines() if "dead-lettering batch" in line]
    assert [reason in line for (reason, _), line in zip(forged, dead, strict=True)] == [True] * len(forged), dead
    # Nothing lost: the forged copies must not count as (or stand in for) the job's own batches.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 items succeeded, 0 failed" in result.stdout, result.stdout
    assert merged_lines(s3, fleet) == [f"{name} value-{i}" for i, name in enumerate(names)]
    # The coordinator read them off the dead queue, with the worker's reason, and said so.
    for reason, _ in forged:
        assert any(reason in line for line in result.stderr.splitlines()), result.stderr


def test_replayed_message_is_refused(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    """A valid message of job A, copied into job B's queue (as is, or with B's id), runs nothing."""
    a_names = put_items(s3, fleet["bucket"], 8, prefix="a-in", stem="a-item")
    names = put_items(s3, fleet["bucket"], 8)
    gate = fleet["gate"]
    spec = make_code(tmp_path / "code", gate.root, gate_item=names[-1])
    log = tmp_path / "workers" / "node-a.log"
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1, *signed(fleet))
    try:
        a_args = fleet_run_args(spec, fleet, "--mini_batch_size", "2", *signed(fleet))
        a_args[a_args.index(f"data={fleet['bucket']}/in")] = f"data={fleet['bucket']}/a-in"
        a_args[a_args.index(f"out={fleet['output']}")] = f"out={fleet['bucket']}/a-out"
        first = run_cli("run", *a_args, env=fleet["env"], timeout=180)
        assert first.returncode == 0, first.stdout + first.stderr
        job_a = re.search(r"job (\S+) succeeded", first.stdout).group(1)  # type: ignore[union-attr]
        plan_a = read_text(s3, f"{fleet['store']}/{job_a}/plan.jsonl").splitlines()
        run = Coordinator(fleet_run_args(spec, fleet, "--mini_batch_size", "2", *signed(fleet)), fleet["env"],
                          tmp_path / "coord")  # fmt: skip
        try:
            gate.wait_started()
            job_b = next(j for j in job_ids(s3, fleet["store"]) if j != job_a)
            # A's batch 3 has the id of B's batch still running, so a mix-up would show in B's output.
            replayed = plan_a[3]
            renamed = replayed.replace(job_a, job_b).encode()
            publish_raw(fleet["url"], f"bf.{job_b}.batches", [replayed.encode(), renamed])
            # One dispatch thread takes them in order: the renamed copy's refusal comes last.
            refused = f"dead-lettering batch 3 of {job_b}: batch 3 of job {job_b} is forged"
            assert wait_for(lambda: refused in log.read_text(), 30), log.read_text()
            gate.open()
            result = run.finish()
        finally:
            run.close()
        assert worker.poll() is None, "the worker died"
    finally:
        stop(worker)
    assert not {f"{n}.done" for n in a_names} & done_files(s3, fleet["output"]), "a replayed message ran"
    assert result.returncode == 0, result.stdout + result.stderr
    assert merged_lines(s3, fleet) == [f"{name} value-{i}" for i, name in enumerate(names)]
    assert "8 items succeeded, 0 failed" in result.stdout, result.stdout


@pytest.mark.parametrize("how", ["unsigned", "other-key"])
def test_keyed_workers_refuse_a_job_not_signed_by_their_key(
    tmp_path: Path, fleet: dict[str, Any], s3: MotoS3, how: str
) -> None:
    put_items(s3, fleet["bucket"], 4)
    spec = make_code(tmp_path / "code")
    extra: list[str] = []
    if how == "other-key":
        other = tmp_path / "other.key"
        write_key(other)
        extra = ["--signing-key-file", str(other)]
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1, *signed(fleet))
    try:
        args = fleet_run_args(spec, fleet, *extra, "--progress_update_timeout", "20")
        result = run_cli("run", *args, env=fleet["env"], timeout=180)
        assert worker.poll() is None, "the worker died"
    finally:
        stop(worker)
    line = one_error_line(result, PASSWORD_AND_INSECURE)
    assert result.returncode == 1, line
    # The worker drops the job's announcements, so nothing runs and the job stalls.
    assert "no worker has reported" in line, line
    assert done_files(s3, fleet["output"]) == set(), "the refused job ran"
    worker_log = (tmp_path / "workers" / "node-a.log").read_text()
    assert ("unsigned announcement" if how == "unsigned" else "forged announcement") in worker_log, worker_log


UNSAFE_KEYS = {
    "in/../../evil.txt": "evil.txt",
    "in/sub/../../../up.txt": "up.txt",
    "in//abs.txt": "abs.txt",
    "in/..\\..\\win.txt": "win.txt",
    "in/C:/drive.txt": "drive.txt",
}
SAFE_KEYS = {
    "in/item000.txt": "item000.txt",
    "in/%2e%2e/x.txt": "x.txt",
    "in/zz/item001.txt": "item001.txt",
    "in/zz/item002.txt": "item002.txt",
    "in/zz/item003.txt": "item003.txt",
}


def test_object_keys_cannot_escape_the_batch_folder(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    """Keys with '..', absolute paths, backslashes or drive letters fail their item; nothing lands outside."""
    bucket = fleet["bucket"].removeprefix("s3://")
    for key in [*UNSAFE_KEYS, *SAFE_KEYS]:
        s3.client().put_object(Bucket=bucket, Key=key, Body=key.encode())
    spec = make_code(tmp_path / "code")
    root = tmp_path / "workers"
    worker = start_worker(fleet["url"], "node-a", root, fleet["env"], 1)
    try:
        args = fleet_run_args(spec, fleet, "--mini_batch_size", "2", "--progress_update_timeout", "40")
        run = Coordinator(args, fleet["env"], tmp_path / "coord")
        result = run.finish(timeout=120)
        assert worker.poll() is None, "the worker died"
    finally:
        stop(worker)
    escaped = [p for p in tmp_path.rglob("*") if p.name in UNSAFE_KEYS.values()]
    assert escaped == [], escaped
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(SAFE_KEYS)} items succeeded, {len(UNSAFE_KEYS)} failed" in result.stdout, result.stdout
    assert done_files(s3, fleet["output"]) == {f"{name}.done" for name in SAFE_KEYS.values()}
    report = read_text(s3, f"{fleet['output']}/logs/sys/job_report/processed_mini-batches.csv")
    errors = " ".join(row["error"] for row in csv.DictReader(report.splitlines()))
    assert errors.count("unsafe path") >= 1, errors


def find_secrets(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def s3_texts(s3: MotoS3, bucket: str) -> dict[str, str]:
    client = s3.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[f"s3://{bucket}/{obj['Key']}"] = body.decode("utf-8", "replace")
    return found


LEAKY_ENTRY = """\
import logging
import os

from azureml_user.parallel_run import EntryScript


def init():
    global out, logger
    out = EntryScript().output_dir
    logger = EntryScript().logger
    print("init on", os.getpid())


def run(mini_batch):
    rows = []
    for path in mini_batch:
        name = os.path.basename(path)
        if name == "item003.txt":
            raise ValueError(f"cannot score {name}")
        logger.info("scoring %s", name)
        print("scored", name)
        with open(os.path.join(out, name + ".done"), "w") as handle:
            handle.write("ok")
        rows.append(name)
    return rows
"""


def test_no_secrets_in_anything_a_job_writes(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> None:
    """Broker password, AWS secret and signing key: absent from every file, log and CLI output of a job."""
    aws_secret = f"AwsSecret{uuid.uuid4().hex}"
    setup = fleet_setup(tmp_path, rabbitmq.url, s3, AWS_SECRET_ACCESS_KEY=aws_secret)
    key = write_key(tmp_path / "fleet.key")
    password = rabbitmq.url.rsplit("@", 1)[0].rsplit(":", 1)[1]
    secrets = {"broker password": password, "AWS secret": aws_secret, "signing key": key.decode()}
    put_items(s3, setup["bucket"], 8)
    spec = make_code(tmp_path / "code")
    (tmp_path / "code" / "entry.py").write_text(LEAKY_ENTRY)
    env = setup["env"]
    outputs: dict[str, str] = {}
    logs = tmp_path / "workers"
    debug = ["--log-level", "DEBUG"]
    node_a = start_worker(
        setup["url"], "node-a", logs, env, 2, "--signing-key-file", str(tmp_path / "fleet.key"), *debug
    )
    node_b = start_worker(setup["url"], "node-b", logs, {**env, "BATCHFLEET_SIGNING_KEY": key.decode()}, 1, *debug)
    job = ""
    try:
        args = fleet_run_args(spec, setup, "--mini_batch_size", "2", "--detach", "--signing-key-file",
                              str(tmp_path / "fleet.key"), "--log-level", "DEBUG")  # fmt: skip
        submitted = run_cli("run", *args, env=env, timeout=120)
        outputs["run --detach"] = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0, outputs["run --detach"]
        job = submitted.stdout.strip().splitlines()[0]
        state = wait_for_state(job, setup["store"], env, timeout=120)
        assert state["state"] == "succeeded", state
        for command in (["status", job], ["status", job, "--json"], ["list"], ["list", "--json"]):
            done = run_cli(*command, "--store", setup["store"], env=env, timeout=60)
            outputs[" ".join(command[:1] + command[2:])] = done.stdout + done.stderr
        # the detached follower's log
        follower = follower_log(job)
        assert wait_for(follower.exists, 10)
        outputs[str(follower)] = follower.read_text(errors="replace")
    finally:
        stop(node_a)
        stop(node_b)
        if job:
            follower_log(job).unlink(missing_ok=True)
    files = {str(p): p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()}
    files = {name: text for name, text in files.items() if not name.endswith(".key")}
    files |= s3_texts(s3, setup["bucket"].removeprefix("s3://"))
    assert any("/logs/user/" in name for name in files), sorted(files)  # the job did write logs
    assert any(name.endswith("node-a.log") for name in files)
    leaks = {name: find_secrets(text, secrets) for name, text in {**files, **outputs}.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
