"""Every store says "unreachable" the same way (StoreUnreachable), so a node waits an outage out
whatever the scheme: S3, Azure Blob or a web server."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import StorageError
from common.messages import BatchMessage, Item
from common.storage import StorageOptions, StoreUnreachable
from common.storage import azure_blob as blob_module
from common.storage.azure_blob import AzureBlobStorage
from common.storage.http import HttpStorage
from worker.download.downloader import Downloader


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Answers(http.server.BaseHTTPRequestHandler):
    codes: dict[str, int] = {"/busy": 503, "/gateway": 502, "/missing": 404}

    def do_GET(self) -> None:
        self.send_error(self.codes.get(self.path, 404))

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("path", "unreachable"), [("/busy", True), ("/gateway", True), ("/missing", False)])
def test_a_web_server_that_is_down_for_now_is_an_outage(web: str, path: str, unreachable: bool) -> None:
    with pytest.raises(StorageError) as caught:
        HttpStorage().read_bytes(web + path)
    assert isinstance(caught.value, StoreUnreachable) is unreachable
    assert path in caught.value.line()


def test_a_web_server_that_does_not_answer_is_an_outage() -> None:
    with pytest.raises(StoreUnreachable) as caught:
        HttpStorage().read_bytes(f"http://127.0.0.1:{_closed_port()}/x.csv?sig=secret")
    assert "secret" not in caught.value.line()  # the query may hold a SAS token


def test_a_blob_service_that_does_not_answer_is_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blob_module, "CLIENT_RETRY", {"initial_backoff": 0, "increment_base": 0, "retry_total": 0})
    key = "a2V5"  # any base64: nothing is signed that reaches a server
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{_closed_port()}/acct;",
    )
    with pytest.raises(StoreUnreachable) as caught:
        AzureBlobStorage().read_bytes("wasbs://data@acct.blob.core.windows.net/a.txt")
    assert "a.txt" in caught.value.line()


class _FlakyStore:
    """Unreachable for the first `down` downloads, then writes what was asked."""

    def __init__(self, down: int) -> None:
        self.down, self.calls = down, 0

    def download(self, uri: str, dest: Path) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise StoreUnreachable(f"cannot reach the blob service for {uri}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(uri)


def _batch() -> BatchMessage:
    return BatchMessage(
        job_id="j", batch_id=0, items=[Item(uri="wasbs://c@a.blob.core.windows.net/x.txt", name="x.txt")]
    )


def _downloader(tmp_path: Path, store: _FlakyStore, patience: float) -> Downloader:
    downloader = Downloader(tmp_path, StorageOptions(), threads=1, patience=patience)
    downloader._storages["wasbs"] = store  # type: ignore[assignment]
    return downloader


def test_the_downloader_waits_a_blob_outage_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("common.storage.outage.time.sleep", lambda seconds: None)
    store = _FlakyStore(down=2)
    downloader = _downloader(tmp_path, store, patience=60)
    try:
        fetched = downloader._download("j", _batch(), attempt=1)
    finally:
        downloader.close()
    assert store.calls == 3
    assert fetched.missing == 0
    assert Path(fetched.paths[0]).read_text() == "wasbs://c@a.blob.core.windows.net/x.txt"


def test_an_outage_longer_than_the_patience_fails_the_try_not_the_item(tmp_path: Path) -> None:
    downloader = _downloader(tmp_path, _FlakyStore(down=100), patience=0)
    try:
        with pytest.raises(StoreUnreachable):  # the try is retried later; the item is not called missing
            downloader._download("j", _batch(), attempt=1)
    finally:
        downloader.close()
    assert not (tmp_path / "j" / "batches").exists() or not any((tmp_path / "j" / "batches").iterdir())
