"""Read-only http(s):// inputs: one file on a web server, read whole, by range, or downloaded."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

from common.errors import StorageError
from common.storage.base import ObjectInfo, Storage, StoreUnreachable

TIMEOUT = 60.0
BUSY = (502, 503, 504)  # the server or a gateway in front of it is down for now: worth waiting out


class HttpStorage(Storage):
    """An `https://` input names one file; listing it yields that file. Nothing is ever written."""

    def __init__(self, options: Any = None) -> None:
        self.timeout = TIMEOUT

    def _open(self, uri: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(uri, method=method, headers={"User-Agent": "batchfleet", **(headers or {})})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in BUSY:
                raise StoreUnreachable(f"{_shown(uri)} answered {exc.code} {exc.reason}", "retry later") from None
            _fail(uri, f"the server answered {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError) as exc:
            why = str(getattr(exc, "reason", exc))
            raise StoreUnreachable(
                f"cannot read {_shown(uri)}: {why}", "check the address and that the server is up"
            ) from None

    def read_bytes(self, uri: str) -> bytes:
        with self._open(uri) as response:
            return bytes(response.read())

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with self._open(uri, headers={"Range": f"bytes={offset}-{offset + length - 1}"}) as response:
            data = bytes(response.read())
            if response.status == 200:  # the server ignored the range: it sent the whole file
                return data[offset : offset + length]
            return data

    def exists(self, uri: str) -> bool:
        try:
            self._open(uri, "HEAD").close()
        except StorageError:
            return False
        return True

    def size(self, uri: str) -> int:
        with self._open(uri, "HEAD") as response:
            length = response.headers.get("Content-Length")
        return int(length) if length is not None else len(self.read_bytes(uri))

    def list(self, uri: str, sizes: bool = True) -> Iterator[ObjectInfo]:
        name = unquote(urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1]) or "download"
        yield ObjectInfo(uri=uri, rel=name, size=self.size(uri) if sizes else None)

    def download(self, uri: str, dest: Path) -> None:
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self._open(uri) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, 1024 * 1024)
            os.replace(part, dest)
        except OSError as exc:
            raise StorageError(f"cannot write {dest}: {exc.strerror or exc}") from None
        finally:
            part.unlink(missing_ok=True)

    def write_bytes(self, uri: str, data: bytes) -> None:
        _read_only(uri)

    def upload(self, src: Path, uri: str) -> None:
        _read_only(uri)

    def delete(self, uri: str) -> None:
        _read_only(uri)

    def check_writable(self, uri: str) -> None:
        _read_only(uri)


def _fail(uri: str, why: str) -> NoReturn:
    raise StorageError(f"cannot read {_shown(uri)}: {why}")


def _read_only(uri: str) -> NoReturn:
    raise StorageError(f"{_shown(uri)} is a web address: it can be read, not written", "write to a path or s3://")


def _shown(uri: str) -> str:
    """The URL without its query: a SAS token or other secret travels there."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?..." if parts.query else "")
