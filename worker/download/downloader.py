"""Smart download: only this mini-batch's objects, fetched concurrently into a per-batch folder."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import BatchfleetError
from common.messages import BatchMessage, InputBinding, Item
from common.safepath import safe_join
from common.storage import Storage, StorageOptions, StoreUnreachable, is_remote, open_storage
from common.storage.outage import wait_out

log = logging.getLogger(__name__)

OUTAGE_PATIENCE = 60.0  # seconds one download waits out an unreachable endpoint before the try fails


@dataclass
class Fetched:
    """Local view of one batch: paths for run(), items that could not be fetched."""

    paths: list[str]
    missing: int = 0
    missing_error: str | None = None
    folder: Path | None = None
    seconds: float = 0.0
    items: list[Item] = field(default_factory=list)

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def sweep_downloads(work_root: Path) -> int:
    """Remove batch download folders a previous run of this node left (it was killed mid-batch)."""
    # <work root>/<session>/<job>/batches (worker/intake/layout.py), and the older <work root>/<job>/batches
    folders = [
        folder for pattern in ("*/batches", "*/*/batches") for folder in work_root.glob(pattern) if folder.is_dir()
    ]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return len(folders)


class Downloader:
    """Fetches batches; one shared pool of connections for object downloads."""

    def __init__(self, work_root: Path, options: StorageOptions, threads: int = 16,
                 patience: float = OUTAGE_PATIENCE) -> None:  # fmt: skip
        self.work_root = work_root
        self.options = options
        self.patience = patience
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bf-download")
        self._storages: dict[str, Storage] = {}
        self._lock = threading.Lock()

    def needs_download(self, binding: InputBinding, message: BatchMessage) -> bool:
        """True when fetching means network I/O (worth doing off the dispatcher thread)."""
        return binding.kind == "files" and binding.mode == "download" and is_remote(binding.uri)

    def fetch(self, job_id: str, binding: InputBinding, message: BatchMessage, attempt: int) -> Fetched:
        start = time.perf_counter()
        if binding.kind == "tabular":
            fetched = Fetched(paths=[], items=list(message.items))
        elif binding.mode == "direct" or not is_remote(binding.uri):
            fetched = Fetched(paths=[item.uri for item in message.items])
        else:
            fetched = self._download(job_id, message, attempt)
        fetched.seconds = time.perf_counter() - start
        return fetched

    def _download(self, job_id: str, message: BatchMessage, attempt: int) -> Fetched:
        """A gone, denied or unsafe object fails its item; an endpoint outage fails this try (it is retried)."""
        folder = self.work_root / job_id / "batches" / f"{message.batch_id:09d}-{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        storage = self._storage(message.items[0].uri)
        started: list[tuple[Item, Path, Future[None]]] = []
        paths, errors = [], []
        for item in message.items:
            try:
                target = safe_join(folder, item.name)  # a key like ../../x must not leave the folder
            except BatchfleetError as exc:
                log.warning("batch %d: %s", message.batch_id, exc.line())
                errors.append(f"{item.name}: {exc.line()}")
                continue
            started.append((item, target, self._pool.submit(self._download_one, storage, item.uri, target)))
        fatal: BatchfleetError | None = None
        for item, target, future in started:
            try:
                future.result()
                paths.append(str(target))
            except StoreUnreachable as exc:
                fatal = fatal or exc
            except BatchfleetError as exc:
                log.warning("batch %d: %s", message.batch_id, exc.line())
                errors.append(f"{item.name}: {exc.line()}")
        if fatal is not None:
            shutil.rmtree(folder, ignore_errors=True)
            raise fatal
        error = "; ".join(errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
        return Fetched(paths=paths, missing=len(errors), missing_error=error or None, folder=folder)

    def _storage(self, uri: str) -> Storage:
        """One storage (so one S3 client and its connection pool) per scheme, kept for the node's life."""
        scheme = uri.split("://", 1)[0] if "://" in uri else "file"
        with self._lock:
            if scheme not in self._storages:
                self._storages[scheme] = open_storage(uri, self.options)
            return self._storages[scheme]

    def _download_one(self, storage: Storage, uri: str, target: Path) -> None:
        """One object; an unreachable store is waited out with capped backoff, up to `patience`."""
        wait_out(lambda: storage.download(uri, target), f"downloading {uri}", self.patience)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
