"""An https S3 endpoint: trusted through a CA bundle option, refused with one line without it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import StorageError
from common.storage import StorageOptions, open_storage
from tests.servers import AWS_TEST_ENV, Pki, free_port, stop_process, wait_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def https_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pki]]:
    base = tmp_path_factory.mktemp("s3tls")
    pki = Pki.create(base)
    if pki is None:
        pytest.fail("the cryptography package is needed to make test certificates")
    port = free_port()
    log = base / "moto.out"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port),
             "-c", str(pki.server_cert), "-k", str(pki.server_key)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        wait_port(port, 30, proc, log)
        yield f"https://127.0.0.1:{port}", pki
    finally:
        stop_process(proc, grace=5)


def options(endpoint: str, ca: Path | None) -> StorageOptions:
    return StorageOptions(endpoint_url=endpoint, region="us-east-1", path_style=True,
                          ca_bundle=str(ca) if ca else None)  # fmt: skip


def test_https_endpoint_with_ca_bundle(https_s3: tuple[str, Pki], monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, pki = https_s3
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    storage = open_storage("s3://tls-bucket/x", options(endpoint, pki.ca))
    storage._s3().create_bucket(Bucket="tls-bucket")  # type: ignore[attr-defined]
    storage.write_bytes("s3://tls-bucket/in/a.txt", b"over https")
    assert storage.read_bytes("s3://tls-bucket/in/a.txt") == b"over https"
    assert [info.rel for info in storage.list("s3://tls-bucket/in")] == ["a.txt"]


def test_https_endpoint_without_ca_is_one_clear_line(
    https_s3: tuple[str, Pki], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, _ = https_s3
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    storage = open_storage("s3://tls-bucket/x", options(endpoint, None))
    with pytest.raises(StorageError) as caught:
        storage.read_bytes("s3://tls-bucket/in/a.txt")
    line = caught.value.line()
    assert "\n" not in line and "certificate" in line.lower()
