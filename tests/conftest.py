"""Session fixtures shared by the integration and chaos tiers: one RabbitMQ node and one S3 endpoint.

Servers start only when a test asks for them, once per session. Missing server software skips those
tests on a laptop and fails them when CI is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import (
    ExternalRabbit,
    MotoS3,
    RabbitNode,
    ServerUnavailable,
    start_moto,
    start_rabbitmq,
    unavailable,
)


def _docker_rabbit() -> Any:
    """Optional: a RabbitMQ container when BATCHFLEET_TEST_DOCKER=1 and testcontainers is installed."""
    try:
        from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-not-found]
    except ImportError:
        unavailable("BATCHFLEET_TEST_DOCKER=1 but testcontainers is not installed (pip install testcontainers)")
    container = RabbitMqContainer("rabbitmq:3.13", username="bftest", password="bftest")
    container.start()
    host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
    server = ExternalRabbit(f"amqp://bftest:bftest@{host}:{port}/")
    server.close = container.stop  # type: ignore[method-assign]
    return server


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode | ExternalRabbit]:
    """A RabbitMQ server: `.url`, and `.stop()/.start()/.restart()/.kill()` on a private node."""
    url = os.environ.get("BATCHFLEET_TEST_AMQP_URL")
    if url:
        yield ExternalRabbit(url)
        return
    if os.environ.get("BATCHFLEET_TEST_DOCKER") == "1":
        server = _docker_rabbit()
        yield server
        server.close()
        return
    try:
        node = start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's S3 server: `.endpoint_url`, `.options`, `.env`, `.make_bucket()`, `.stop()/.start()`.

    Its dummy credentials are exported for the session (workers spawned by tests inherit them),
    and ~/.aws is hidden so the host's profiles cannot leak in.
    """
    base = tmp_path_factory.mktemp("s3")
    try:
        server = start_moto(base)
    except ServerUnavailable as exc:
        unavailable(str(exc))
    isolated = {
        **server.env,
        "AWS_CONFIG_FILE": str(Path(base, "aws-config")),
        "AWS_SHARED_CREDENTIALS_FILE": str(Path(base, "aws-credentials")),
    }
    saved = {name: os.environ.get(name) for name in isolated}
    os.environ.update(isolated)
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.close()
