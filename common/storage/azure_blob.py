"""Azure Blob Storage and ADLS Gen2 (`wasbs://container@account.blob.core.windows.net/path`,
`abfss://filesystem@account.dfs.core.windows.net/path`) over azure-storage-blob: the optional
`batchfleet[azure]` extra. Credentials come from the environment: AZURE_STORAGE_CONNECTION_STRING
(which may name its own BlobEndpoint, as Azurite's does), else AZURE_STORAGE_KEY or
AZURE_STORAGE_SAS_TOKEN for the account in the URI, else anonymous access."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from common.errors import StorageError, UsageError
from common.storage.base import ObjectInfo, Storage, StoreUnreachable

# The SDK's default waits 15 s, 18 s, 24 s between tries; the caller that can wait (the downloader)
# waits an outage out itself, so the client gives up sooner and says so.
CLIENT_RETRY: dict[str, Any] = {"initial_backoff": 1, "increment_base": 2, "retry_total": 2}
CONNECT_TIMEOUT = 10


def split_uri(uri: str) -> tuple[str, str, str]:
    """(account, container, blob path) of a wasbs:// or abfss:// URI."""
    scheme, _, rest = uri.partition("://")
    where, _, path = rest.partition("/")
    container, at, host = where.partition("@")
    if not at or not container or not host:
        raise UsageError(
            f"{uri} does not name a container and an account",
            f"write {scheme}://CONTAINER@ACCOUNT.blob.core.windows.net/PATH",
        )
    return host.split(".", 1)[0], container, path


class AzureBlobStorage(Storage):
    """Whole-blob operations; a write is one upload, so it is atomic."""

    def __init__(self, options: Any = None) -> None:
        try:
            from azure.storage.blob import BlobServiceClient
        except ImportError:
            raise UsageError(
                "wasbs:// and abfss:// locations need the azure extra", "pip install 'batchfleet[azure]'"
            ) from None
        self._service_class = BlobServiceClient
        self._services: dict[str, Any] = {}

    def _service(self, account: str) -> Any:
        if account not in self._services:
            from azure.storage.blob import ExponentialRetry

            extra: dict[str, Any] = {
                "retry_policy": ExponentialRetry(**CLIENT_RETRY),
                "connection_timeout": CONNECT_TIMEOUT,
            }
            connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
            if connection:
                client = self._service_class.from_connection_string(connection, **extra)
            else:
                credential = os.environ.get("AZURE_STORAGE_KEY") or os.environ.get("AZURE_STORAGE_SAS_TOKEN")
                url = f"https://{account}.blob.core.windows.net"
                client = self._service_class(url, credential=credential, **extra)
            self._services[account] = client
        return self._services[account]

    def _blob(self, uri: str) -> Any:
        account, container, path = split_uri(uri)
        return self._service(account).get_blob_client(container, path)

    def _container(self, uri: str) -> Any:
        account, container, _ = split_uri(uri)
        return self._service(account).get_container_client(container)

    def _call(self, uri: str, action: str, work: Any) -> Any:
        from azure.core.exceptions import AzureError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError

        try:
            return work()
        except ResourceNotFoundError:
            _fail(uri, action, "no such blob or container")
        except (ServiceRequestError, ServiceResponseError) as exc:  # no answer: the service is down or away
            raise StoreUnreachable(
                f"cannot reach the blob service for {uri} ({type(exc).__name__})",
                "check the account's endpoint and that the service is up",
            ) from None
        except AzureError as exc:
            reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
            _fail(uri, action, reason)

    def read_bytes(self, uri: str) -> bytes:
        return bytes(self._call(uri, "read", lambda: self._blob(uri).download_blob().readall()))

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return bytes(self._call(uri, "read", lambda: self._blob(uri).download_blob(offset, length).readall()))

    def write_bytes(self, uri: str, data: bytes) -> None:
        self._call(uri, "write", lambda: self._blob(uri).upload_blob(data, overwrite=True))

    def exists(self, uri: str) -> bool:
        return bool(self._call(uri, "check", lambda: self._blob(uri).exists()))

    def size(self, uri: str) -> int:
        return int(self._call(uri, "check", lambda: self._blob(uri).get_blob_properties().size))

    def list(self, uri: str, sizes: bool = True) -> Iterator[ObjectInfo]:
        """Blobs below `uri` in name order; a URI naming one blob lists that blob."""
        _, _, path = split_uri(uri)
        if path and not path.endswith("/") and self.exists(uri):
            yield ObjectInfo(uri=uri, rel=path.rsplit("/", 1)[-1], size=self.size(uri) if sizes else None)
            return
        prefix = f"{path.rstrip('/')}/" if path.strip("/") else ""
        base = uri[: len(uri) - len(path)] if path else uri.rstrip("/") + "/"
        pages = self._call(uri, "list", lambda: self._container(uri).list_blobs(name_starts_with=prefix or None))
        for blob in self._call(uri, "list", lambda: list(pages)):
            yield ObjectInfo(uri=base + blob.name, rel=blob.name[len(prefix) :], size=int(blob.size))

    def download(self, uri: str, dest: Path) -> None:
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "wb") as out:
                self._call(uri, "download", lambda: self._blob(uri).download_blob().readinto(out))
            os.replace(part, dest)
        except OSError as exc:
            raise StorageError(f"cannot write {dest}: {exc.strerror or exc}") from None
        finally:
            part.unlink(missing_ok=True)

    def upload(self, src: Path, uri: str) -> None:
        if not src.is_file():
            raise StorageError(f"cannot upload {src}: not a file")
        with open(src, "rb") as data:
            self._call(uri, "write", lambda: self._blob(uri).upload_blob(data, overwrite=True))

    def delete(self, uri: str) -> None:
        """Delete the blob and everything below it as a prefix."""
        _, _, path = split_uri(uri)
        if not path.strip("/"):
            raise StorageError(f"refusing to delete everything in {uri}", "name a path below the container")
        names = [info.uri for info in self.list(uri, sizes=False)]
        for name in names:
            self._call(name, "delete", lambda name=name: self._blob(name).delete_blob())

    def check_writable(self, uri: str) -> None:
        probe = f"{uri.rstrip('/')}/.bf-probe-{uuid.uuid4().hex[:8]}"
        self.write_bytes(probe, b"")
        self._call(probe, "delete", lambda: self._blob(probe).delete_blob())


def _fail(uri: str, action: str, why: str) -> NoReturn:
    raise StorageError(f"cannot {action} {uri}: {why}")
