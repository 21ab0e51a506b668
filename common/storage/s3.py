"""S3 and S3-compatible storage (MinIO, moto) over boto3: streamed listing, one-PUT writes, 1-line errors."""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import boto3
import botocore.exceptions as bex
from boto3.exceptions import Boto3Error
from botocore.config import Config

from common.errors import StorageError, UsageError
from common.storage.base import NameRun, ObjectInfo, Storage, StoreUnreachable
from common.storage.options import StorageOptions

T = TypeVar("T")
Names = list[str]  # (S3Storage.list hides the builtin inside the class)

DELETE_BATCH = 1000  # the DeleteObjects limit
LIST_PAGE_SIZE = 1000  # keys per ListObjectsV2 page: the most S3 returns
LIST_AHEAD = 8  # folders of a prefix listed at once, on threads
PAGES_AHEAD = 4  # pages a folder's lister may hold before the reader gets to it
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
DENIED_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "Forbidden",
    "403",
}
GONE_CODES = {"NoSuchKey", "NotFound", "404"}
UNREACHABLE = (
    bex.EndpointConnectionError,
    bex.ConnectTimeoutError,
    bex.ConnectionClosedError,
    bex.ReadTimeoutError,
    bex.ResponseStreamingError,
    bex.IncompleteReadError,
)
# botocore retries a request, not the reading of its body: a connection cut mid-body is read again here
BODY_ERRORS = (bex.ResponseStreamingError, bex.IncompleteReadError, bex.ReadTimeoutError)
BODY_ATTEMPTS = 4


def _unwrap(exc: Exception) -> Exception:
    """The botocore error inside boto3's transfer wrappers (S3UploadFailedError, RetriesExceededError)."""
    inner: BaseException | None = exc
    for _ in range(5):
        if inner is None:
            break
        inner = getattr(inner, "last_exception", None) or inner.__cause__ or inner.__context__
        if isinstance(inner, bex.BotoCoreError | bex.ClientError):
            return inner
    return exc


def _get_body(client: Any, **request: str) -> bytes:
    """GET and read the whole body, asking again when the connection breaks while the body streams."""
    for attempt in range(BODY_ATTEMPTS - 1):
        try:
            return bytes(client.get_object(**request)["Body"].read())
        except BODY_ERRORS:
            time.sleep(0.2 * 2**attempt)
    return bytes(client.get_object(**request)["Body"].read())  # the last try's error is the caller's


class ObjectGone(StorageError):
    """The object does not exist (any more)."""


class EndpointUnreachable(StoreUnreachable):
    """The S3 endpoint did not answer even after boto3's retries."""


def _pages_of(names: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(names), LIST_PAGE_SIZE):
        yield names[start : start + LIST_PAGE_SIZE]


class _FolderLister:
    """Lists a prefix's folders on threads, LIST_AHEAD at a time, and hands their pages over in order."""

    def __init__(self, storage: S3Storage, uri: str, bucket: str, prefix: str) -> None:
        self.storage, self.uri, self.bucket, self.prefix = storage, uri, bucket, prefix
        self._pool = ThreadPoolExecutor(LIST_AHEAD, thread_name_prefix="bf-list")
        self._stop = threading.Event()

    def _fill(self, folder: str, pages: queue.Queue[list[str] | BaseException | None]) -> None:
        try:
            for names in self.storage.folder_names(self.uri, self.bucket, self.prefix, folder):
                while not self._stop.is_set():
                    try:
                        pages.put(names, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            pages.put(None)
        except BaseException as exc:  # handed to the reader, which raises it in its own thread
            pages.put(exc)

    def runs(self, base: str, entries: list[tuple[str, bool]]) -> Iterator[NameRun]:
        started: dict[str, queue.Queue[list[str] | BaseException | None]] = {}
        folders = [name for name, is_folder in entries if is_folder]
        try:
            loose: list[str] = []
            for name, is_folder in entries:
                if not is_folder:
                    loose.append(name)
                    continue
                if loose:
                    yield NameRun(base, "", loose)
                    loose = []
                self._start_ahead(folders, started)
                yield from self._drain(base, started.pop(name))
                folders.remove(name)
            if loose:
                yield NameRun(base, "", loose)
        finally:
            self._stop.set()
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _start_ahead(
        self, folders: list[str], started: dict[str, queue.Queue[list[str] | BaseException | None]]
    ) -> None:
        for folder in folders[:LIST_AHEAD]:
            if folder not in started:
                started[folder] = queue.Queue(maxsize=PAGES_AHEAD)
                self._pool.submit(self._fill, folder, started[folder])

    @staticmethod
    def _drain(base: str, pages: queue.Queue[list[str] | BaseException | None]) -> Iterator[NameRun]:
        while (names := pages.get()) is not None:
            if isinstance(names, BaseException):
                raise names
            if names:
                yield NameRun(base, "", names)


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); the key may be empty."""
    if not uri.startswith("s3://"):
        raise UsageError(f"{uri} is not an s3:// URI", "use s3://bucket/prefix")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise UsageError(f"{uri} names no bucket", "use s3://bucket/prefix")
    return bucket, key


class S3Storage(Storage):
    """One boto3 client per process, created on first use (clients are thread safe, sessions are not)."""

    def __init__(
        self,
        options: StorageOptions,
        *,
        max_attempts: int = 8,
        connect_timeout: float = 5,
        read_timeout: float = 60,
    ) -> None:
        self._options = options
        self._max_attempts = max_attempts
        self._timeouts = (connect_timeout, read_timeout)
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _pid=0, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # client

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self._new_client()
                self._pid = os.getpid()
            return self._client

    def _new_client(self) -> Any:
        opts = self._options
        try:
            session = boto3.session.Session(profile_name=opts.profile, region_name=opts.region)
        except bex.ProfileNotFound:
            raise StorageError(
                f"AWS profile {opts.profile!r} not found", "check ~/.aws/config or the profile setting"
            ) from None
        config = Config(
            retries={"mode": "standard", "max_attempts": self._max_attempts},
            s3={"addressing_style": self._addressing_style()},
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
            max_pool_connections=32,
        )
        verify: str | None = opts.ca_bundle or None
        # endpoint_url None lets boto3 resolve AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / config files itself
        return session.client("s3", endpoint_url=opts.endpoint_url, verify=verify, config=config)

    def _addressing_style(self) -> Literal["auto", "virtual", "path"]:
        """Path style for custom endpoints (MinIO rarely has wildcard DNS), else boto3's choice."""
        if self._options.path_style is not None:
            return "path" if self._options.path_style else "virtual"
        custom = self._options.endpoint_url or any(os.environ.get(name) for name in ENDPOINT_ENV)
        return "path" if custom else "auto"

    def _call(self, uri: str, action: str, fn: Callable[[Any], T]) -> T:
        client = self._s3()
        try:
            return fn(client)
        except (bex.BotoCoreError, bex.ClientError) as exc:
            self._raise(exc, uri, action, client)
        except Boto3Error as exc:  # upload_file / download_file wrap the client's error
            self._raise(_unwrap(exc), uri, action, client)

    def _raise(self, exc: Exception, uri: str, action: str, client: Any) -> NoReturn:
        bucket, key = split_uri(uri)
        if isinstance(exc, bex.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (code in GONE_CODES and key and not self._bucket_exists(client, bucket)):
                raise StorageError(f"bucket {bucket} does not exist", "create it or fix the URI") from None
            if code in DENIED_CODES or status == 403:
                raise StorageError(f"access denied to {uri} ({code})", "check credentials/policy") from None
            if code in GONE_CODES or status == 404:
                raise ObjectGone(
                    f"{uri} is gone (no such object)", "it was deleted or never written; check the path"
                ) from None
            text = " ".join(str(error.get("Message", "")).split())[:200]
            raise StorageError(f"cannot {action} {uri}: {code} {text}".rstrip()) from None
        if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
            raise StorageError(
                "no AWS credentials found",
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile (AWS_PROFILE)",
            ) from None
        if isinstance(exc, UNREACHABLE):
            raise EndpointUnreachable(
                f"cannot reach S3 endpoint {client.meta.endpoint_url} ({type(exc).__name__}) for {uri}",
                "check the endpoint URL and that the service is up",
            ) from None
        if isinstance(exc, bex.SSLError):
            raise StorageError(
                f"TLS verification failed for S3 endpoint {client.meta.endpoint_url}",
                "set the CA bundle (ca_bundle) or fix the endpoint certificate",
            ) from None
        raise StorageError(f"cannot {action} {uri}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _bucket_exists(client: Any, bucket: str) -> bool:
        """HEAD answers a bare 404 for a missing bucket too; ask once to tell which it was."""
        try:
            client.head_bucket(Bucket=bucket)
        except bex.ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code")) not in {"404", "NoSuchBucket", "NotFound"}
        except bex.BotoCoreError:
            return True
        return True

    # reads

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split_uri(uri)
        return self._call(uri, "read", lambda c: _get_body(c, Bucket=bucket, Key=key))

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        bucket, key = split_uri(uri)
        client = self._s3()
        try:
            return _get_body(client, Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
        except bex.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # past the end, as a local read would be
            self._raise(exc, uri, "read", client)
        except bex.BotoCoreError as exc:
            self._raise(exc, uri, "read", client)

    def exists(self, uri: str) -> bool:
        """An object, or (like a local folder) a prefix with objects below it, or a bucket."""
        bucket, key = split_uri(uri)
        if not key.strip("/"):
            return self._bucket_exists(self._s3(), bucket)
        if not key.endswith("/"):
            try:
                self._head(uri)
            except ObjectGone:
                pass
            else:
                return True
        prefix = f"{key.rstrip('/')}/"
        found = self._call(uri, "list", lambda c: c.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1))
        return bool(found.get("KeyCount"))

    def size(self, uri: str) -> int:
        return int(self._head(uri)["ContentLength"])

    def _head(self, uri: str) -> dict[str, Any]:
        bucket, key = split_uri(uri)
        return self._call(uri, "read", lambda c: c.head_object(Bucket=bucket, Key=key))

    def list(self, uri: str, sizes: bool = True) -> Iterator[ObjectInfo]:
        """Objects below uri in key order, one page in memory; a URI naming one object lists it."""
        bucket, key = split_uri(uri)
        if key and not key.endswith("/"):
            try:
                head = self._head(uri)
            except ObjectGone:
                pass  # not an object: a prefix
            else:
                yield ObjectInfo(uri=uri, rel=key.rsplit("/", 1)[-1], size=int(head["ContentLength"]))
                return
        prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
        for page in self._pages(uri, bucket, prefix):
            for item in page.get("Contents", []):
                name = item["Key"]
                if name.endswith("/"):
                    continue  # folder markers made by consoles
                yield ObjectInfo(uri=f"s3://{bucket}/{name}", rel=name[len(prefix) :], size=int(item["Size"]))

    def list_names(self, uri: str) -> Iterator[NameRun]:
        """Objects below uri as runs of names, one listing page each.

        Where the prefix holds folders, each folder is listed by its own paginator on a thread
        (LIST_AHEAD folders ahead of the one being read), so a tree of many folders lists in
        parallel; the runs still come in key order.
        """
        bucket, key = split_uri(uri)
        if key and not key.endswith("/"):
            try:
                self._head(uri)
            except ObjectGone:
                pass  # not an object: a prefix
            else:
                name = key.rsplit("/", 1)[-1]
                yield NameRun(uri[: -len(name)], "", [name])
                return
        prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
        base = f"s3://{bucket}/{prefix}"
        files, folders = self._top_level(uri, bucket, prefix)
        if not folders:
            yield from (NameRun(base, "", names) for names in _pages_of(files))
            return
        entries = sorted([(name, False) for name in files] + [(folder, True) for folder in folders])
        yield from _FolderLister(self, uri, bucket, prefix).runs(base, entries)

    def _top_level(self, uri: str, bucket: str, prefix: str) -> tuple[Names, Names]:
        """Names of the objects directly below prefix, and of its folders (each ending in "/")."""
        client = self._s3()
        paginator = client.get_paginator("list_objects_v2")
        config = {"PageSize": LIST_PAGE_SIZE}
        files: Names = []
        folders: Names = []
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/", PaginationConfig=config):
                files += [item["Key"][len(prefix) :] for item in page.get("Contents", [])]
                folders += [entry["Prefix"][len(prefix) :] for entry in page.get("CommonPrefixes", [])]
        except (bex.BotoCoreError, bex.ClientError) as exc:
            self._raise(exc, uri, "list", client)
        return [name for name in files if name and not name.endswith("/")], folders

    def etags(self, uri: str) -> dict[str, str]:
        """ETag by relative path of what `list(uri)` lists: they change when an object does (a cache key)."""
        bucket, key = split_uri(uri)
        if key and not key.endswith("/"):
            try:
                return {key.rsplit("/", 1)[-1]: str(self._head(uri).get("ETag", ""))}
            except ObjectGone:
                pass  # not an object: a prefix
        prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
        return {
            item["Key"][len(prefix) :]: str(item.get("ETag", ""))
            for page in self._pages(uri, bucket, prefix)
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/")
        }

    def _pages(self, uri: str, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
        client = self._s3()
        paginator = client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE})
        try:
            yield from pages
        except (bex.BotoCoreError, bex.ClientError) as exc:
            self._raise(exc, uri, "list", client)

    def folder_names(self, uri: str, bucket: str, prefix: str, folder: str) -> Iterator[Names]:
        """Every object below prefix + folder, a page at a time, named relative to prefix."""
        for page in self._pages(uri, bucket, prefix + folder):
            names = [item["Key"][len(prefix) :] for item in page.get("Contents", [])]
            yield [name for name in names if not name.endswith("/")]  # folder markers made by consoles

    def download(self, uri: str, dest: Path) -> None:
        bucket, key = split_uri(uri)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._call(uri, "download", lambda c: c.download_file(bucket, key, str(part)))
            os.replace(part, dest)
        except OSError as exc:
            raise StorageError(f"cannot write {dest}: {exc.strerror or exc}") from None
        finally:
            part.unlink(missing_ok=True)

    # writes

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_uri(uri)
        self._call(uri, "write", lambda c: c.put_object(Bucket=bucket, Key=key, Body=data))

    def upload(self, src: Path, uri: str) -> None:
        bucket, key = split_uri(uri)
        if not src.is_file():
            raise StorageError(f"cannot upload {src}: not a file")
        self._call(uri, "write", lambda c: c.upload_file(str(src), bucket, key))

    def delete(self, uri: str) -> None:
        """Delete the object and everything below it as a prefix, in batches of 1000."""
        bucket, key = split_uri(uri)
        if not key.strip("/"):
            raise StorageError(f"refusing to delete everything in bucket {bucket}", "name a prefix below it")
        if not key.endswith("/"):
            self._call(uri, "delete", lambda c: c.delete_object(Bucket=bucket, Key=key))
        batch: list[dict[str, str]] = []
        for page in self._pages(uri, bucket, f"{key.rstrip('/')}/"):
            batch.extend({"Key": item["Key"]} for item in page.get("Contents", []))
            while len(batch) >= DELETE_BATCH:
                self._delete_batch(uri, bucket, batch[:DELETE_BATCH])
                del batch[:DELETE_BATCH]
        if batch:
            self._delete_batch(uri, bucket, batch)

    def _delete_batch(self, uri: str, bucket: str, keys: Sequence[dict[str, str]]) -> None:
        result = self._call(
            uri,
            "delete",
            lambda c: c.delete_objects(Bucket=bucket, Delete={"Objects": [*keys], "Quiet": True}),
        )
        errors = result.get("Errors") or []
        if errors:
            first = errors[0]
            raise StorageError(
                f"cannot delete {len(errors)} object(s) below {uri}: "
                f"s3://{bucket}/{first.get('Key')} {first.get('Code')}",
                "check the bucket policy allows s3:DeleteObject",
            )

    def check_reachable(self, uri: str) -> str:
        bucket, key = split_uri(uri)
        prefix = key.strip("/") + "/" if key.strip("/") else ""
        self._call(uri, "list", lambda c: c.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1))
        return "readable (writing is not tried: a health check creates nothing)"

    def check_writable(self, uri: str) -> None:
        probe = f"{uri.rstrip('/')}/.bf-probe-{uuid.uuid4().hex[:8]}"
        self.write_bytes(probe, b"")
        bucket, key = split_uri(probe)
        self._call(probe, "delete", lambda c: c.delete_object(Bucket=bucket, Key=key))
