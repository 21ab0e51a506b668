"""Secrets stay out of user code and out of every file a job writes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import COMPONENT, run_cli, stop
from tests.integration.fault_helpers import fleet_run_args, fleet_setup, put_items
from tests.security.conftest import log_text, write_key
from tests.servers import TEST_USER, MotoS3

pytestmark = pytest.mark.security

# Every child writes what its environment holds, as the process sees it and as the OS started it.
ENV_DUMP_ENTRY = """\
import os
from pathlib import Path

from azureml_user.parallel_run import EntryScript


def init():
    out = Path(EntryScript().output_dir)
    out.mkdir(parents=True, exist_ok=True)
    proc = Path("/proc/self/environ")
    started = proc.read_bytes().decode(errors="replace") if proc.exists() else ""
    dump = "\\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())) + "\\n--\\n" + started
    (out / f"env-{os.getpid()}.txt").write_text(dump)


def run(mini_batch):
    return [os.path.basename(path) for path in mini_batch]
"""

LEAKING_ENTRY = """\
import os


def run(mini_batch):
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    print("connecting with", secret)
    for path in mini_batch:
        if path.endswith("item001.txt"):
            raise ValueError(f"cannot open {{path}} with key {{secret}} (password={password})")
    return [os.path.basename(path) for path in mini_batch]
"""


def spawn_worker(node: str, logs: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker that gets its broker from the environment, as a service does (no URL on its command line)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{node}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "batchfleet", "worker", "--node-id", node, "--processes", "1",
             "--work-dir", str(logs / f"work-{node}"), "--log-level", "INFO"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def s3_texts(s3: MotoS3, bucket: str) -> dict[str, str]:
    client, found = s3.client(), {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[obj["Key"]] = body.decode("utf-8", "replace")
    return found


def test_children_start_without_batchfleets_secrets(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> None:
    """Neither the key, its file, nor the broker URL or password reach user code, from either way of
    giving them; the password file is enough for a worker to connect, and no password is warned about."""
    key_file = tmp_path / "fleet.key"
    key = write_key(key_file).decode()
    fleet = fleet_setup(tmp_path, rabbitmq.url, s3, BATCHFLEET_SIGNING_KEY_FILE=str(key_file))
    host, password = rabbitmq.url.rsplit("@", 1)[1], rabbitmq.url.rsplit("@", 1)[0].rsplit(":", 1)[1]
    password_file = tmp_path / "broker.password"
    password_file.write_text(password + "\n")
    base = {k: v for k, v in fleet["env"].items() if not k.startswith("BATCHFLEET_SIGNING")}
    by_file = {"BATCHFLEET_BROKER": f"amqp://{TEST_USER}@{host}", "BATCHFLEET_BROKER_PASSWORD_FILE": str(password_file)}
    envs = {
        "node-a": {**base, "BATCHFLEET_SIGNING_KEY": key, "BATCHFLEET_BROKER": rabbitmq.url},
        "node-b": {**base, "BATCHFLEET_SIGNING_KEY_FILE": str(key_file), **by_file},
    }
    put_items(s3, fleet["bucket"], 8)
    code = tmp_path / "code"
    code.mkdir()
    (code / "component.yaml").write_text(COMPONENT)
    (code / "entry.py").write_text(ENV_DUMP_ENTRY)
    logs = tmp_path / "workers"
    nodes = [spawn_worker(node, logs, env) for node, env in envs.items()]
    try:
        args = fleet_run_args(code / "component.yaml", fleet, "--mini_batch_size", "1")
        result = run_cli("run", *args, env=fleet["env"], timeout=240)
    finally:
        for node in nodes:
            stop(node)
    assert result.returncode == 0, result.stdout + result.stderr
    texts = s3_texts(s3, fleet["bucket"].removeprefix("s3://"))
    dumps = {name: text for name, text in texts.items() if "/env-" in name}
    assert len(dumps) >= 2, sorted(texts)  # a process of each node started
    for name, dump in dumps.items():
        for needle in (key, password, str(key_file), str(password_file), "BATCHFLEET_SIGNING_KEY", "BATCHFLEET_BROKER"):
            assert needle not in dump, (name, needle)
        assert "AWS_ACCESS_KEY_ID=" in dump, "user code keeps what it needs for S3"
    for node in envs:
        text = log_text(logs / f"{node}.log")
        assert "serving job" in text and "is visible" not in text and password not in text, text


def test_secrets_in_error_texts_and_user_logs_are_masked_in_every_file(
    tmp_path: Path, rabbitmq: Any, s3: MotoS3
) -> None:
    """User code that prints a secret and puts it (and a password) in an exception: attempts.csv,
    processed_mini-batches.csv, job_result.txt, job_error.txt, state.json, report.html and the
    user logs uploaded from the worker show *** instead."""
    aws_secret, password = f"AwsSecret{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    fleet = fleet_setup(tmp_path, rabbitmq.url, s3, AWS_SECRET_ACCESS_KEY=aws_secret)
    put_items(s3, fleet["bucket"], 4)
    code = tmp_path / "code"
    code.mkdir()
    (code / "component.yaml").write_text(COMPONENT)
    (code / "entry.py").write_text(LEAKING_ENTRY.format(password=password))
    node = spawn_worker("node-a", tmp_path / "workers", {**fleet["env"], "BATCHFLEET_BROKER": rabbitmq.url})
    try:
        args = fleet_run_args(code / "component.yaml", fleet, "--mini_batch_size", "1", "--error_threshold", "-1",
                              "--run_max_try", "1")  # fmt: skip
        result = run_cli("run", *args, env=fleet["env"], timeout=240)
    finally:
        stop(node)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 items succeeded, 1 failed" in result.stdout
    texts = s3_texts(s3, fleet["bucket"].removeprefix("s3://"))
    written = {name: text for name, text in texts.items() if "/logs/" in name or name.endswith("state.json")}
    for wanted in ("attempts.csv", "processed_mini-batches.csv", "job_result.txt", "job_error.txt", "state.json",
                   "report.html", "/user/"):  # fmt: skip
        assert any(wanted in name for name in written), (wanted, sorted(written))
    leaks = {name for name, text in written.items() if aws_secret in text or password in text}
    assert leaks == set(), leaks
    attempts = next(text for name, text in written.items() if name.endswith("attempts.csv"))
    assert "cannot open" in attempts and "***" in attempts, attempts
    assert aws_secret not in result.stdout + result.stderr and password not in result.stdout + result.stderr
