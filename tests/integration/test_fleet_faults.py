"""Fleet-mode faults with the real servers: each is one clear line, the right exit code, nothing lost.

Access denied uses a second moto server with IAM checks switched on (moto's `/moto-api/reset-auth`):
an IAM user whose policy allows s3:* but denies one bucket, and an access key moto has never issued.
moto does not evaluate bucket policies for listing, so an identity policy is what denies here.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import COMPONENT, fleet_env, run_cli, start_worker, stop, wait_for
from tests.servers import MotoS3, free_port, start_moto

pytestmark = pytest.mark.integration

# run() writes "<name>.done" per item (the side effect tests look for) and returns "<name> <text>".
# The batch holding GATE_ITEM writes `started` and waits for `go`, so a test can act mid-job.
GATED_ENTRY = """\
import os
import time
from pathlib import Path

from azureml_user.parallel_run import EntryScript

GATE = Path({gate!r})
GATE_ITEM = {gate_item!r}


def init():
    global out
    out = EntryScript().output_dir


def run(mini_batch):
    names = [os.path.basename(path) for path in mini_batch]
    if GATE_ITEM in names:
        (GATE / "started").write_text("1")
        deadline = time.monotonic() + 90
        while not (GATE / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    rows = []
    for path in mini_batch:
        name = os.path.basename(path)
        with open(path) as handle:
            text = handle.read().strip()
        with open(os.path.join(out, name + ".done"), "w") as handle:
            handle.write(text)
        rows.append(f"{{name}} {{text}}")
    return rows
"""


@dataclass
class Gate:
    """A folder the entry script and the test meet in."""

    root: Path

    def wait_started(self, timeout: float = 60) -> None:
        assert wait_for(lambda: (self.root / "started").exists(), timeout), "the gated batch never started"

    def open(self) -> None:
        (self.root / "go").write_text("1")


def make_code(root: Path, gate: Path | None = None, gate_item: str = "") -> Path:
    """A component folder; with `gate`, run() pauses on the batch holding `gate_item`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "component.yaml").write_text(COMPONENT)
    gate_dir = str(gate) if gate is not None else str(root / "no-gate")
    (root / "entry.py").write_text(GATED_ENTRY.format(gate=gate_dir, gate_item=gate_item))
    return root / "component.yaml"


def put_items(s3: MotoS3, bucket: str, count: int, prefix: str = "in", stem: str = "item") -> list[str]:
    """`count` small objects <stem>000.txt... under `prefix`; returns their names."""
    client, name = s3.client(), bucket.removeprefix("s3://")
    names = [f"{stem}{i:03d}.txt" for i in range(count)]
    for i, item in enumerate(names):
        client.put_object(Bucket=name, Key=f"{prefix}/{item}", Body=f"value-{i}".encode())
    return names


def one_error_line(result: subprocess.CompletedProcess[str], start: str = "batchfleet: error: ") -> str:
    """The single line the CLI printed for an error; fails on tracebacks or extra lines."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def closed_port_url(password: str = "not-used") -> str:
    return f"amqp://bftest:{password}@127.0.0.1:{free_port()}/"


def wrong_password_url(url: str, password: str) -> str:
    head, _, host = url.rpartition("@")
    user = head.split("://", 1)[1].split(":", 1)[0]
    return f"amqp://{user}:{password}@{host}"


def job_ids(s3: MotoS3, store: str) -> list[str]:
    """Job ids with an area under an s3:// store."""
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/", Delimiter="/")
    return [p["Prefix"][len(prefix) + 1 :].rstrip("/") for p in listed.get("CommonPrefixes", [])]


def read_text(s3: MotoS3, uri: str) -> str:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return str(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def done_files(s3: MotoS3, output: str) -> set[str]:
    bucket, _, prefix = output.removeprefix("s3://").partition("/")
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return {
        o["Key"].rsplit("/", 1)[1] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".done")
    }


class Coordinator:
    """`batchfleet run` in the background, its output in files (a pipe could fill and stall it)."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out, self.err = log_dir / "run.out", log_dir / "run.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchfleet", "run", *args],
                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def finish(self, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(self.proc)
            pytest.fail(f"the coordinator did not finish in {timeout:.0f}s:\n{self.err.read_text()}")
        return subprocess.CompletedProcess(self.proc.args, code, self.out.read_text(), self.err.read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)


def fleet_setup(tmp_path: Path, url: str, s3: MotoS3, **env: str) -> dict[str, Any]:
    """A bucket, an S3 store and output, a gate folder, and the environment for fleet processes."""
    bucket = s3.make_bucket()
    gate = tmp_path / "gate"
    gate.mkdir()
    return {
        "bucket": bucket, "store": f"{bucket}/store", "output": f"{bucket}/out", "gate": Gate(gate),
        "env": fleet_env(s3.endpoint_url, **env), "url": url,
    }  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> dict[str, Any]:
    return fleet_setup(tmp_path, rabbitmq.url, s3)


def fleet_run_args(spec: Path, f: dict[str, Any], *extra: str) -> list[str]:
    return [
        str(spec), "--broker", f["url"], "--store", f["store"], "--input", f"data={f['bucket']}/in",
        "--output", f"out={f['output']}", "--no-progress", "--run_invocation_timeout", "120", *extra,
    ]  # fmt: skip


# Broker faults


def local_run(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """`batchfleet run` of a one-file job on local storage against broker `url`."""
    spec = make_code(tmp_path / "code")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    args: list[str | Path] = ["--store", tmp_path / "store", "--input", f"data={tmp_path / 'in'}",
                              "--output", f"out={tmp_path / 'out'}"]  # fmt: skip
    return run_cli("run", spec, "--broker", url, *args, "--no-progress", env=fleet_env(), timeout=60)


def run_or_worker(command: str, tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    if command == "run":
        return local_run(tmp_path, url)
    return run_cli("worker", "--broker", url, "--work-dir", tmp_path / "work", env=fleet_env(), timeout=60)


@pytest.mark.parametrize("command", ["run", "worker"])
def test_unreachable_broker(tmp_path: Path, command: str) -> None:
    result = run_or_worker(command, tmp_path, closed_port_url("s3cr3t-unreachable"))
    line = one_error_line(result)
    assert result.returncode == 1
    assert "cannot reach RabbitMQ at 127.0.0.1:" in line
    assert "s3cr3t-unreachable" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()  # nothing half-done


@pytest.mark.parametrize("command", ["run", "worker"])
def test_wrong_broker_credentials(tmp_path: Path, rabbitmq: Any, command: str) -> None:
    password = f"wrong-{uuid.uuid4().hex}"
    result = run_or_worker(command, tmp_path, wrong_password_url(rabbitmq.url, password))
    line = one_error_line(result)
    assert result.returncode == 1
    assert "refused the login" in line, line
    assert password not in result.stdout + result.stderr


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


# Access denied: a moto server that checks IAM


@dataclass
class LockedS3:
    server: MotoS3
    key: str
    secret: str
    open_bucket: str
    locked_bucket: str

    def env(self, key: str | None = None, secret: str | None = None) -> dict[str, str]:
        return fleet_env(self.server.endpoint_url, AWS_ACCESS_KEY_ID=key or self.key,
                         AWS_SECRET_ACCESS_KEY=secret or self.secret)  # fmt: skip


@pytest.fixture(scope="module")
def locked_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedS3]:
    """IAM user allowed s3:* except on one bucket; IAM checks switched on after the setup."""
    import requests

    server = start_moto(tmp_path_factory.mktemp("locked-s3"))
    try:
        admin = server.client()
        suffix = uuid.uuid4().hex[:8]
        open_bucket, locked_bucket = f"bf-open-{suffix}", f"bf-locked-{suffix}"
        for bucket in (open_bucket, locked_bucket):
            admin.create_bucket(Bucket=bucket)
            admin.put_object(Bucket=bucket, Key="in/item000.txt", Body=b"value-0")
        iam = server.client("iam")
        iam.create_user(UserName="bf-user")
        created = iam.create_access_key(UserName="bf-user")["AccessKey"]
        locked = [f"arn:aws:s3:::{locked_bucket}", f"arn:aws:s3:::{locked_bucket}/*"]
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:*", "Resource": locked},
        ]}  # fmt: skip
        iam.put_user_policy(UserName="bf-user", PolicyName="bf", PolicyDocument=json.dumps(policy))
        requests.post(f"{server.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield LockedS3(server, created["AccessKeyId"], created["SecretAccessKey"], open_bucket, locked_bucket)
    finally:
        server.close()


@pytest.mark.parametrize("where", ["input", "store"])
def test_access_denied(tmp_path: Path, rabbitmq: Any, locked_s3: LockedS3, where: str) -> None:
    spec = make_code(tmp_path / "code")
    good, bad = f"s3://{locked_s3.open_bucket}", f"s3://{locked_s3.locked_bucket}"
    data = f"{bad if where == 'input' else good}/in"
    store = f"{bad if where == 'store' else good}/store"
    result = run_cli("run", spec, "--broker", rabbitmq.url, "--store", store, "--input", f"data={data}",
                     "--output", f"out={good}/out", "--no-progress", env=locked_s3.env(), timeout=120)  # fmt: skip
    line = one_error_line(result)
    assert f"access denied to {bad}/" in line, line
    assert locked_s3.secret not in result.stdout + result.stderr
    # input unreadable: an input error (exit 2); store: a storage error (exit 1)
    assert result.returncode == (2 if where == "input" else 1), line


def test_credentials_rejected(tmp_path: Path, rabbitmq: Any, locked_s3: LockedS3) -> None:
    spec = make_code(tmp_path / "code")
    secret = f"rejected-{uuid.uuid4().hex}"
    good = f"s3://{locked_s3.open_bucket}"
    env = locked_s3.env(key="AKIAUNKNOWNKEY000000", secret=secret)
    result = run_cli("run", spec, "--broker", rabbitmq.url, "--store", f"{good}/store", "--input", f"data={good}/in",
                     "--output", f"out={good}/out", "--no-progress", env=env, timeout=120)  # fmt: skip
    line = one_error_line(result)
    assert "access denied" in line and "InvalidAccessKeyId" in line, line
    assert secret not in result.stdout + result.stderr
    assert result.returncode in (1, 2), line


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


def publish_raw(url: str, queue: str, bodies: list[bytes], headers: dict[str, str] | None = None) -> None:
    """Publish straight to a queue with pika, as someone outside batchfleet would."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2, headers=headers)
        for body in bodies:
            channel.basic_publish("", queue, body, properties, mandatory=True)
    finally:
        connection.close()


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
    # The coordinator follows the dead queue: each bad message arrived there with the worker's reason.
    reasons = [line for line in result.stderr.splitlines() if "unparseable batch message" in line]
    assert len(reasons) == len(bad), result.stderr


def test_snapshot_hash_mismatch(tmp_path: Path, fleet: dict[str, Any], s3: MotoS3) -> None:
    put_items(s3, fleet["bucket"], 6)
    spec = make_code(tmp_path / "code")
    env = fleet["env"]
    submitted = run_cli("run", *fleet_run_args(spec, fleet, "--detach"), env=env, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().splitlines()[0]
    bucket = fleet["bucket"].removeprefix("s3://")
    key = f"store/{job}/code/entry.py"
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


def follower_log(job: str) -> Path:
    """Where `run --detach` sends its background follower's output."""
    return Path(tempfile.gettempdir()) / f"batchfleet-{job}.log"


def wait_for_state(job: str, store: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Poll `batchfleet status --json` until the job is no longer running."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        result = run_cli("status", job, "--store", store, "--json", env=env, timeout=60)
        if result.returncode == 0:
            state = json.loads(result.stdout)
            if state.get("state") not in (None, "running"):
                return state
        time.sleep(1)
    pytest.fail(f"job {job} still not decided after {timeout:.0f}s: {state}")


# Health check


def test_worker_check(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> None:
    env = fleet_env(s3.endpoint_url)
    bucket = s3.make_bucket()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    password = f"wrong-{uuid.uuid4().hex}"
    healthy = [
        ["--broker", rabbitmq.url],
        ["--broker", rabbitmq.url, "--store", f"{bucket}/store"],
        ["--broker", rabbitmq.url, "--store", str(tmp_path / "store")],
    ]
    for args in healthy:
        result = run_cli("worker", "--check", *args, env=env, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("ok: broker "), result.stdout
        assert rabbitmq.url.rsplit("@")[0].rsplit(":", 1)[1] not in result.stdout  # the password
    unhealthy = {
        "cannot reach RabbitMQ": ["--broker", closed_port_url()],
        "refused the login": ["--broker", wrong_password_url(rabbitmq.url, password)],
        "does not exist": ["--broker", rabbitmq.url, "--store", f"s3://bf-missing-{uuid.uuid4().hex[:8]}/store"],
        "not writable": ["--broker", rabbitmq.url, "--store", str(blocker / "store")],
    }
    for reason, args in unhealthy.items():
        result = run_cli("worker", "--check", *args, env=env, timeout=60)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        output = result.stdout + result.stderr
        assert "Traceback" not in output
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("batchfleet: unhealthy: ") and reason in lines[0], output
        assert password not in output
