"""S3Storage against moto's S3 server: reads, ranges, listing, transfers, deletes and one-line errors."""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import StorageError
from common.storage import StorageOptions, StoreUnreachable
from common.storage import s3 as s3_module
from common.storage.s3 import ObjectGone, S3Storage
from tests.servers import MotoS3, ServerUnavailable, free_port, start_moto, unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def store(s3: MotoS3) -> S3Storage:
    return S3Storage(s3.options)


@pytest.fixture
def bucket(s3: MotoS3) -> str:
    return s3.make_bucket()


@pytest.fixture(scope="module")
def locked_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoS3, dict[str, str]]]:
    """A second moto server that enforces IAM: a user without policies gets AccessDenied.

    moto allows INITIAL_NO_AUTH_ACTION_COUNT unauthenticated calls, then checks every request;
    the three free calls create the user, its key and the bucket.
    """
    try:
        server = start_moto(tmp_path_factory.mktemp("s3-locked"), {"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        iam = server.client("iam")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        server.client().create_bucket(Bucket="locked")
        yield server, {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        server.close()


def put_tree(store: S3Storage, root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        store.write_bytes(f"{root}/{rel}", data)


# reads and writes


def test_write_read_exists_size(store: S3Storage, bucket: str) -> None:
    uri = f"{bucket}/dir/obj.bin"
    assert not store.exists(uri)
    store.write_bytes(uri, b"hello world")
    assert store.exists(uri)
    assert store.read_bytes(uri) == b"hello world"
    assert store.size(uri) == 11
    store.write_bytes(uri, b"v2")  # one PUT replaces the whole object
    assert store.read_bytes(uri) == b"v2"


def test_exists_for_objects_prefixes_and_buckets(store: S3Storage, bucket: str) -> None:
    store.write_bytes(f"{bucket}/a/b/c.txt", b"x")
    assert store.exists(f"{bucket}/a/b/c.txt")
    assert store.exists(f"{bucket}/a/b")  # a "folder", as LocalStorage.exists says for directories
    assert store.exists(f"{bucket}/a/")
    assert store.exists(bucket)
    assert not store.exists(f"{bucket}/a/b/c")
    assert not store.exists(f"{bucket}/zzz/")
    assert not store.exists("s3://bf-no-such-bucket-at-all")


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [(0, 4, b"0123"), (3, 3, b"345"), (8, 10, b"89"), (10, 5, b""), (50, 1, b""), (2, 0, b"")],
)
def test_read_range(store: S3Storage, bucket: str, offset: int, length: int, expected: bytes) -> None:
    uri = f"{bucket}/digits"
    store.write_bytes(uri, b"0123456789")
    assert store.read_range(uri, offset, length) == expected


def test_list_is_sorted_nested_and_relative(store: S3Storage, bucket: str) -> None:
    files = {"b.txt": b"bb", "a/2.txt": b"2", "a/1.txt": b"1", "a-c.txt": b"ac", "a/deep/x.bin": b"xyz"}
    put_tree(store, f"{bucket}/in", files)
    store.write_bytes(f"{bucket}/in2/not-mine", b"!")  # shares the prefix text, not the folder
    store.write_bytes(f"{bucket}/in.txt", b"!")
    store.write_bytes(f"{bucket}/in/folder/", b"")  # a console-made folder marker is not a file
    expected = sorted(files)  # S3 order is the keys' byte order
    for root in (f"{bucket}/in", f"{bucket}/in/"):
        listed = list(store.list(root))
        assert [o.rel for o in listed] == expected
        assert [o.size for o in listed] == [len(files[rel]) for rel in expected]
        assert [o.uri for o in listed] == [f"{bucket}/in/{rel}" for rel in expected]


def test_list_streams_across_pages(store: S3Storage, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"f{i:03d}": b"x" for i in range(23)}
    put_tree(store, f"{bucket}/many", files)
    pages: list[int] = []
    real = store._pages

    def counting(uri: str, bucket_name: str, prefix: str) -> Iterator[dict[str, Any]]:
        for page in real(uri, bucket_name, prefix):
            pages.append(len(page.get("Contents", [])))
            yield page

    monkeypatch.setattr(store, "_pages", counting)
    monkeypatch.setattr(s3_module, "LIST_PAGE_SIZE", 5)
    assert [o.rel for o in store.list(f"{bucket}/many")] == sorted(files)
    assert pages == [5, 5, 5, 5, 3]


def _named(store: S3Storage, uri: str) -> list[tuple[str, str]]:
    return [(run.uri_prefix + name, run.rel_prefix + name) for run in store.list_names(uri) for name in run.names]


def test_list_names_lists_folders_in_parallel_in_key_order(
    store: S3Storage, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folders (more than are listed at once, over several pages each) between loose objects."""
    monkeypatch.setattr(s3_module, "LIST_PAGE_SIZE", 3)
    monkeypatch.setattr(s3_module, "LIST_AHEAD", 2)
    files = {f"d{d:02d}/f{i}.bin": b"x" for d in range(7) for i in range(d)}
    files |= {"a.txt": b"", "d03.txt": b"", "d03-x/y": b"", "zz": b"", "d05/deep/er/z": b""}
    put_tree(store, f"{bucket}/tree", files)
    store.write_bytes(f"{bucket}/tree/d02/", b"")  # a console-made folder marker is not a file
    listed = [(o.uri, o.rel) for o in store.list(f"{bucket}/tree")]
    assert [rel for _, rel in listed] == sorted(files)
    for root in (f"{bucket}/tree", f"{bucket}/tree/"):
        assert _named(store, root) == listed
    assert _named(store, f"{bucket}/tree/d03.txt") == [(f"{bucket}/tree/d03.txt", "d03.txt")]
    assert _named(store, f"{bucket}/nothing-here") == []


def test_list_names_of_a_missing_bucket(store: S3Storage) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        list(store.list_names(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/in"))


def test_list_of_one_object_and_of_nothing(store: S3Storage, bucket: str) -> None:
    store.write_bytes(f"{bucket}/in/one.csv", b"a,b\n")
    store.write_bytes(f"{bucket}/in/one.csv.bak", b"old")
    [only] = store.list(f"{bucket}/in/one.csv")
    assert (only.uri, only.rel, only.size) == (f"{bucket}/in/one.csv", "one.csv", 4)
    assert list(store.list(f"{bucket}/nothing-here")) == []
    assert [o.rel for o in store.list(bucket)] == ["in/one.csv", "in/one.csv.bak"]


def test_download_and_upload(store: S3Storage, bucket: str, tmp_path: Path) -> None:
    data = uuid.uuid4().bytes * 1000
    store.write_bytes(f"{bucket}/blob", data)
    dest = tmp_path / "deep" / "er" / "blob"
    store.download(f"{bucket}/blob", dest)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["blob"]  # no partial files left
    src = tmp_path / "up.txt"
    src.write_bytes(b"uploaded")
    store.upload(src, f"{bucket}/up/up.txt")
    assert store.read_bytes(f"{bucket}/up/up.txt") == b"uploaded"


def test_delete_prefix_object_and_batches(store: S3Storage, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 3)
    put_tree(store, f"{bucket}/job", {f"parts/{i}.txt": b"p" for i in range(10)} | {"job.json": b"{}"})
    store.write_bytes(f"{bucket}/job2/keep", b"k")
    store.write_bytes(f"{bucket}/job.txt", b"k")
    store.delete(f"{bucket}/job")
    assert [o.rel for o in store.list(bucket)] == ["job.txt", "job2/keep"]
    store.delete(f"{bucket}/job.txt")
    store.delete(f"{bucket}/job.txt")  # already gone: fine
    assert not store.exists(f"{bucket}/job.txt")
    with pytest.raises(StorageError, match="refusing"):
        store.delete(bucket)


def test_check_writable_leaves_nothing(store: S3Storage, bucket: str) -> None:
    store.check_writable(f"{bucket}/out")
    assert list(store.list(bucket)) == []


def test_pickles_without_its_client(store: S3Storage, bucket: str) -> None:
    store.write_bytes(f"{bucket}/k", b"v")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read_bytes(f"{bucket}/k") == b"v"


# errors a person can act on


def test_missing_bucket(store: S3Storage, tmp_path: Path) -> None:
    name = f"no-such-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src.txt"
    src.write_bytes(b"x")
    for call in (
        lambda: store.upload(src, f"s3://{name}/k"),
        lambda: store.download(f"s3://{name}/k", tmp_path / "dest"),
        lambda: store.read_bytes(f"s3://{name}/k"),
        lambda: store.exists(f"s3://{name}/k"),
        lambda: list(store.list(f"s3://{name}/in")),
        lambda: store.check_writable(f"s3://{name}/out"),
    ):
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.line() == f"bucket {name} does not exist; create it or fix the URI"


def test_object_gone(store: S3Storage, bucket: str, tmp_path: Path) -> None:
    uri = f"{bucket}/vanished"
    for call in (
        lambda: store.read_bytes(uri),
        lambda: store.read_range(uri, 0, 4),
        lambda: store.size(uri),
        lambda: store.download(uri, tmp_path / "x"),
    ):
        with pytest.raises(ObjectGone) as info:
            call()
        assert info.value.line().startswith(f"{uri} is gone")
    assert not (tmp_path / "x").exists()


def test_access_denied(
    locked_s3: tuple[MotoS3, dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, creds = locked_s3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["secret"])
    store = S3Storage(server.options, max_attempts=1)
    src = tmp_path / "src.txt"
    src.write_bytes(b"x")
    for call in (
        lambda: store.upload(src, "s3://locked/up"),
        lambda: list(store.list("s3://locked/in")),
        lambda: store.write_bytes("s3://locked/k", b"x"),
        lambda: store.read_bytes("s3://locked/k"),
        lambda: store.check_writable("s3://locked/out"),
    ):
        with pytest.raises(StorageError) as info:
            call()
        line = info.value.line()
        assert line.startswith("access denied to s3://locked/")
        assert line.endswith("check credentials/policy")
        assert creds["secret"] not in line


def test_unknown_access_key_is_access_denied(
    locked_s3: tuple[MotoS3, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = locked_s3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(StorageError) as info:
        S3Storage(server.options, max_attempts=1).read_bytes("s3://locked/k")
    assert "access denied to s3://locked/k (InvalidAccessKeyId)" in info.value.line()
    assert "wrong-secret-value" not in info.value.line()


def test_endpoint_unreachable() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3Storage(StorageOptions(endpoint_url=endpoint, region="us-east-1"), max_attempts=2)
    with pytest.raises(StorageError) as info:
        store.read_bytes("s3://b/k")
    line = info.value.line()
    assert line.startswith(f"cannot reach S3 endpoint {endpoint}")
    assert "\n" not in line


def test_missing_credentials(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    with pytest.raises(StorageError) as info:
        S3Storage(s3.options, max_attempts=1).read_bytes("s3://b/k")
    assert info.value.line().startswith("no AWS credentials found; set AWS_ACCESS_KEY_ID")


def test_profile(s3: MotoS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[bf]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Storage(s3.options.model_copy(update={"profile": "bf"}))
    store.write_bytes(f"{bucket}/via-profile", b"ok")
    assert store.read_bytes(f"{bucket}/via-profile") == b"ok"
    with pytest.raises(StorageError, match="AWS profile 'nope' not found"):
        S3Storage(s3.options.model_copy(update={"profile": "nope"})).exists(f"{bucket}/x")


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_endpoint_from_environment(s3: MotoS3, bucket: str, variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint in the options: boto3 itself reads the endpoint variables."""
    monkeypatch.setenv(variable, s3.endpoint_url)
    store = S3Storage(StorageOptions(region="us-east-1"))
    store.write_bytes(f"{bucket}/env", b"found")
    assert store.read_bytes(f"{bucket}/env") == b"found"
    assert store._s3().meta.endpoint_url == s3.endpoint_url


def test_short_outage_is_retried(s3: MotoS3, bucket: str) -> None:
    store = S3Storage(s3.options)
    store.write_bytes(f"{bucket}/before", b"1")
    s3.stop()
    healer = threading.Timer(2.0, s3.start)
    healer.start()
    try:
        store.write_bytes(f"{bucket}/during", b"2")  # refused for ~2 s, then retried with backoff
        assert store.read_bytes(f"{bucket}/before") == b"1"
    finally:
        healer.join()
        s3.start()
    assert store.read_bytes(f"{bucket}/during") == b"2"


class CutBody:
    """A response body whose connection breaks while it streams."""

    def read(self) -> bytes:
        raise s3_module.bex.ResponseStreamingError(error="Connection broken: IncompleteRead(0 bytes read)")


def cut_bodies(store: S3Storage, monkeypatch: pytest.MonkeyPatch, cuts: int) -> list[dict[str, Any]]:
    """The first `cuts` GETs of the store's client answer, then break mid-body."""
    client, calls = store._s3(), []
    real = client.get_object

    def get_object(**request: Any) -> dict[str, Any]:
        calls.append(request)
        response = real(**request)
        if len(calls) <= cuts:
            response["Body"] = CutBody()
        return response

    monkeypatch.setattr(client, "get_object", get_object)
    monkeypatch.setattr(s3_module.time, "sleep", lambda _: None)
    return calls


def test_a_body_cut_mid_stream_is_read_again(s3: MotoS3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries requests, not bodies: the merge read a part while S3 restarted and failed the job."""
    store = S3Storage(s3.options)
    store.write_bytes(f"{bucket}/part", b"0123456789")
    calls = cut_bodies(store, monkeypatch, cuts=2)
    assert store.read_bytes(f"{bucket}/part") == b"0123456789"
    assert store.read_range(f"{bucket}/part", 2, 3) == b"234"
    assert len(calls) == 4 and calls[-1]["Range"] == "bytes=2-4"


def test_a_body_that_keeps_breaking_is_an_outage(s3: MotoS3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outage, not a bad object: the merger and the workers wait it out."""
    store = S3Storage(s3.options)
    store.write_bytes(f"{bucket}/part", b"x")
    calls = cut_bodies(store, monkeypatch, cuts=100)
    with pytest.raises(StoreUnreachable) as info:
        store.read_bytes(f"{bucket}/part")
    assert len(calls) == s3_module.BODY_ATTEMPTS
    assert info.value.line().startswith("cannot reach S3 endpoint") and "\n" not in info.value.line()
