"""The security tier: a hostile publisher on the real RabbitMQ node, against signed and unsigned fleets.

The attacker has broker access (publish anywhere, with any headers) and no signing key; some tests
also let it write to a bucket of its own. Every test asserts that what it wanted did not happen.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.broker.rabbitmq.publish import ANNOUNCE_EXCHANGE
from common.messages import JobAnnouncement
from tests.integration.fault_helpers import fleet_setup, publish_raw
from tests.servers import MotoS3

ATTACKER_KEY = b"an-attacker-key-of-32-bytes-long"


def write_key(path: Path) -> bytes:
    """A fresh signing key in a file only its owner can read; returns the key as batchfleet reads it."""
    key = base64.b64encode(os.urandom(32))
    path.write_bytes(key + b"\n")
    path.chmod(0o600)
    return key


@dataclass
class Hostile:
    """Someone with broker access and no key."""

    url: str

    def publish(self, queue: str, bodies: list[bytes], headers: dict[str, Any] | None = None) -> None:
        publish_raw(self.url, queue, bodies, headers)

    def announce(self, job_id: str, job_uri: str, state: str = "active", sig: str | None = None) -> None:
        body = JobAnnouncement(job_id=job_id, job_uri=job_uri, state=state, sig=sig).model_dump_json().encode()  # type: ignore[arg-type]
        self.announce_raw(body)

    def announce_raw(self, body: bytes) -> None:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(ANNOUNCE_EXCHANGE, "", body, pika.BasicProperties(delivery_mode=2))
        finally:
            connection.close()


@pytest.fixture
def hostile(rabbitmq: Any) -> Hostile:
    return Hostile(rabbitmq.url)


@pytest.fixture
def signed_fleet(tmp_path: Path, rabbitmq: Any, s3: MotoS3) -> dict[str, Any]:
    """A bucket and store, and an environment whose processes share a fresh key (from a key file)."""
    key_file = tmp_path / "fleet.key"
    key = write_key(key_file)
    setup = fleet_setup(tmp_path, rabbitmq.url, s3, BATCHFLEET_SIGNING_KEY_FILE=str(key_file))
    setup["key"], setup["key_file"] = key, key_file
    return setup


def forged_result(job: str, batch_id: int, part: str, node: str = "evil", outcome: str = "committed") -> bytes:
    """The issue's forged report: a committed try whose part is whatever the attacker names."""
    report = {"v": 1, "job_id": job, "batch_id": batch_id, "node_id": node, "attempt": 1, "outcome": outcome,
              "total": 2, "succeeded": 2, "failed": 0, "part": part}  # fmt: skip
    return b"R" + json.dumps(report).encode()


def forged_event(job: str, kind: str, detail: str = "forged", node: str = "evil") -> bytes:
    return b"E" + json.dumps({"v": 1, "job_id": job, "node_id": node, "kind": kind, "detail": detail}).encode()


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def completed(args: list[str], result: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(args)}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
