"""Fleet faults reaching the servers: broker down or login refused, S3 access denied, `worker --check`."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import fleet_env, run_cli
from tests.integration.fault_helpers import make_code, one_error_line
from tests.servers import MotoS3, free_port, start_moto

pytestmark = pytest.mark.integration


def closed_port_url(password: str = "not-used") -> str:
    return f"amqp://bftest:{password}@127.0.0.1:{free_port()}/"


def wrong_password_url(url: str, password: str) -> str:
    head, _, host = url.rpartition("@")
    user = head.split("://", 1)[1].split(":", 1)[0]
    return f"amqp://{user}:{password}@{host}"


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


# Access denied: a moto server that checks IAM (moto's `/moto-api/reset-auth`): an IAM user whose
# policy allows s3:* but denies one bucket, and an access key moto has never issued. moto does not
# evaluate bucket policies for listing, so an identity policy is what denies here.


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


# Health check


def test_worker_check(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> None:
    env = fleet_env(s3.endpoint_url)
    bucket = s3.make_bucket()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    password = f"wrong-{uuid.uuid4().hex}"
    # The URL (with its password) in the environment, as deployments pass it: no warning line.
    healthy = [
        [rabbitmq.url],
        [rabbitmq.url, "--store", f"{bucket}/store"],
        [rabbitmq.url, "--store", str(tmp_path / "store")],
    ]
    for url, *args in healthy:
        result = run_cli("worker", "--check", *args, env={**env, "BATCHFLEET_BROKER": url}, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("ok: broker "), result.stdout
        assert rabbitmq.url.rsplit("@")[0].rsplit(":", 1)[1] not in result.stdout  # the password
    # A health check creates nothing: no local folder, no probe object.
    assert not (tmp_path / "store").exists()
    assert "Contents" not in s3.client().list_objects_v2(Bucket=bucket.removeprefix("s3://"))
    unhealthy = {
        "cannot reach RabbitMQ": [closed_port_url()],
        "refused the login": [wrong_password_url(rabbitmq.url, password)],
        "does not exist": [rabbitmq.url, "--store", f"s3://bf-missing-{uuid.uuid4().hex[:8]}/store"],
        "not writable": [rabbitmq.url, "--store", str(blocker / "store")],
    }
    for reason, (url, *args) in unhealthy.items():
        result = run_cli("worker", "--check", *args, env={**env, "BATCHFLEET_BROKER": url}, timeout=60)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        output = result.stdout + result.stderr
        assert "Traceback" not in output
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("batchfleet: unhealthy: ") and reason in lines[0], output
        assert password not in output
