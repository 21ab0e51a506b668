"""Session fixtures shared by the integration and chaos tiers: one RabbitMQ node, one S3 endpoint, and a
three-node RabbitMQ cluster for the chaos tier's node-loss tests.

Servers start only when a test asks for them, once per session. Missing server software skips those
tests on a laptop and fails them when CI is set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import RabbitCluster, start_cluster
from tests.servers import (
    ExternalRabbit,
    MotoS3,
    RabbitNode,
    ServerUnavailable,
    rabbit_bin_dir,
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


def _docker_instead() -> bool:
    """No rabbitmq-server here, but a Docker engine and testcontainers are: use a container."""
    if rabbit_bin_dir() is not None or importlib.util.find_spec("testcontainers") is None:
        return False
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:  # the client alone is not enough: `docker info` needs a running engine
        return subprocess.run([docker, "info"], capture_output=True, timeout=15, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode | ExternalRabbit]:
    """A RabbitMQ server: `.url`, and `.stop()/.start()/.restart()/.kill()` on a private node."""
    url = os.environ.get("BATCHFLEET_TEST_AMQP_URL")
    if url:
        yield ExternalRabbit(url)
        return
    if os.environ.get("BATCHFLEET_TEST_DOCKER") == "1" or _docker_instead():
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
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three private RabbitMQ nodes in one cluster (about a minute to boot; only chaos tests ask for it).

    Always private nodes: a test kills them. Tests take it through a fixture that heals it afterwards
    (tests/chaos/conftest.py `cluster`), so each starts with every node running.
    """
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("rabbit-cluster"))
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield cluster
    finally:
        cluster.close()


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


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Azurite's blob service: `.connection_string` (exported for the session), `.make_container()`."""
    from tests.azurite import Azurite

    server = Azurite(tmp_path_factory.mktemp("azurite"))
    try:
        server.launch()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    saved = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = server.connection_string
    try:
        yield server
    finally:
        if saved is None:
            os.environ.pop("AZURE_STORAGE_CONNECTION_STRING", None)
        else:
            os.environ["AZURE_STORAGE_CONNECTION_STRING"] = saved
        server.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One closing line when tests were skipped for want of a server or browser, with the fix."""
    skipped = len(terminalreporter.stats.get("skipped", []))
    if skipped:
        terminalreporter.write_line(
            f"{skipped} tests skipped: rabbitmq-server, chromium or azurite is missing here; "
            "install them with `sudo make system-deps` (Debian), then run `make test` again",
            yellow=True,
            bold=True,
        )
