"""Storage behind the same interface as S3: Azure Blob / ADLS (wasbs://, abfss://) against Azurite,
and read-only https:// inputs from a local web server; both as job inputs end to end."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from common.errors import StorageError, UsageError
from common.storage import open_storage
from common.storage.azure_blob import AzureBlobStorage, split_uri
from tests.cli_helpers import batchfleet, make_component

pytestmark = pytest.mark.integration


def test_blob_uris_split() -> None:
    assert split_uri("wasbs://data@acct.blob.core.windows.net/a/b.txt") == ("acct", "data", "a/b.txt")
    assert split_uri("abfss://fs@acct.dfs.core.windows.net/x/") == ("acct", "fs", "x/")
    with pytest.raises(UsageError) as caught:
        split_uri("wasbs://acct.blob.core.windows.net/x")
    assert "does not name a container and an account" in caught.value.line()


def test_blob_storage_contract(azurite: Any, tmp_path: Path) -> None:
    root = azurite.make_container()
    store = open_storage(root)
    assert isinstance(store, AzureBlobStorage)
    store.write_bytes(f"{root}/dir/a.txt", b"hello world")
    store.write_bytes(f"{root}/dir/sub/b.txt", b"bee")
    assert store.read_bytes(f"{root}/dir/a.txt") == b"hello world"
    assert store.read_range(f"{root}/dir/a.txt", 6, 5) == b"world"
    assert store.exists(f"{root}/dir/a.txt") and not store.exists(f"{root}/dir/none.txt")
    assert store.size(f"{root}/dir/a.txt") == 11
    listed = [(info.rel, info.size) for info in store.list(f"{root}/dir")]
    assert listed == [("a.txt", 11), ("sub/b.txt", 3)]
    assert [info.rel for info in store.list(f"{root}/dir/a.txt")] == ["a.txt"]
    store.download(f"{root}/dir/sub/b.txt", tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_bytes() == b"bee"
    (tmp_path / "up.txt").write_bytes(b"up")
    store.upload(tmp_path / "up.txt", f"{root}/up.txt")
    assert store.read_bytes(f"{root}/up.txt") == b"up"
    store.check_writable(f"{root}/out")
    store.delete(f"{root}/dir")
    assert [info.rel for info in store.list(root)] == ["up.txt"]
    with pytest.raises(StorageError) as caught:
        store.read_bytes(f"{root}/gone.txt")
    assert "cannot read" in caught.value.line() and "no such blob" in caught.value.line()


def test_abfss_uri_reaches_the_same_blobs(azurite: Any) -> None:
    root = azurite.make_container()
    container = root.removeprefix("wasbs://").split("@")[0]
    adls = f"abfss://{container}@devstoreaccount1.dfs.core.windows.net"
    open_storage(f"{root}/x.txt").write_bytes(f"{root}/x.txt", b"x")
    assert open_storage(adls).read_bytes(f"{adls}/x.txt") == b"x"


def test_a_job_reads_and_writes_azure_blobs(azurite: Any, tmp_path: Path) -> None:
    root = azurite.make_container()
    store = open_storage(root)
    for i in range(5):
        store.write_bytes(f"{root}/in/item{i:03d}.txt", f"{i}\n".encode())
    spec = make_component(tmp_path / "code", files=0)
    result = batchfleet(
        "run", spec, "--input", f"data={root}/in", "--output", f"scored={root}/out",
        "--store", tmp_path / "store", "--no-progress", "--mini_batch_size", "2",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    merged = store.read_bytes(f"{root}/out/parallel_run_step.txt").decode().splitlines()
    assert merged == [f"item{i:03d}.txt" for i in range(5)]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    """A local web server over tmp_path/www (loopback only)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_storage_reads_and_refuses_writes(web: str, tmp_path: Path) -> None:
    (tmp_path / "www" / "rows.csv").write_text("id,v\n1,2\n3,4\n")
    store = open_storage(f"{web}/rows.csv")
    assert store.read_bytes(f"{web}/rows.csv") == b"id,v\n1,2\n3,4\n"
    assert store.read_range(f"{web}/rows.csv", 5, 4) == b"1,2\n"
    assert store.size(f"{web}/rows.csv") == 13 and store.exists(f"{web}/rows.csv")
    assert not store.exists(f"{web}/missing.csv")
    assert [(i.rel, i.size) for i in store.list(f"{web}/rows.csv")] == [("rows.csv", 13)]
    with pytest.raises(StorageError) as caught:
        store.write_bytes(f"{web}/x?sig=secret", b"")
    assert "can be read, not written" in caught.value.line() and "secret" not in caught.value.line()
    with pytest.raises(StorageError) as caught:
        store.read_bytes(f"{web}/missing.csv")
    assert "the server answered 404" in caught.value.line()


SUM_ROWS = """\
def run(mini_batch):
    return [f"{row.id} {row.v}" for row in mini_batch.itertuples()]
"""


def test_an_https_table_input_is_downloaded_by_range(web: str, tmp_path: Path) -> None:
    (tmp_path / "www" / "rows.csv").write_text("id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(200)))
    spec = make_component(tmp_path / "code", entry=SUM_ROWS, files=0)
    result = batchfleet(
        "run", spec, "--input", f"data={web}/rows.csv:tabular", "--output", f"scored={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress", "--mini_batch_size", "500",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    rows = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert rows == [f"{i} {i * 2}" for i in range(200)]


def test_an_https_file_input_is_downloaded(web: str, tmp_path: Path) -> None:
    (tmp_path / "www" / "model.txt").write_text("42\n")
    spec = make_component(tmp_path / "code", files=0)
    result = batchfleet(
        "run", spec, "--input", f"data={web}/model.txt", "--output", f"scored={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines() == ["model.txt"]
