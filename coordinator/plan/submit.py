"""Create a job's area in the store: job.json and plan; then publish the plan (the code: plan/snapshot.py)."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from common.broker.base import Broker, queue_names
from common.jobarea import PLAN_FILE, JobArea
from common.messages import BatchMessage, JobConfig
from common.storage import StorageOptions, is_remote, open_storage
from coordinator.plan.lines import encoded_plan
from coordinator.scratch import scratch_dir

if TYPE_CHECKING:
    from common.storage.prelist import Prelisted

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 2000
# Over a network broker, millisecond mini-batches cost less than their messages; workers run a
# pack's members one by one and hand back what they should not hold (see policy.keeps_packed).
# 32 rather than 8: a W1 fleet job's worker spent 0.25 CPU-s less on pika, RabbitMQ 0.1 s less.
FLEET_BATCHES_PER_MESSAGE = 32
# Small first chunks, so workers get going while the rest is planned.
FIRST_CHUNK = 64


def new_job_id(name: str) -> str:
    """Readable, sortable and unique: <name>-<utc time>-<random>."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "job"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def new_manifest(store_uri: str | None = None) -> Path:
    """Where a plan is written locally: a file in a new temporary folder (the caller removes it).

    With a local job area the folder is made inside it, so the finished plan is linked into place
    (a million mini-batches are hundreds of MB: a copy costs seconds of a busy machine's disk).
    """
    if store_uri is not None and not is_remote(store_uri):
        return scratch_dir("plan", Path(store_uri)) / PLAN_FILE
    return scratch_dir("plan") / PLAN_FILE


def write_job(job: JobConfig, options: StorageOptions) -> None:
    storage = open_storage(job.store_uri, options)
    storage.check_writable(job.store_uri)
    storage.write_bytes(JobArea(job.store_uri).job_file, job.model_dump_json(indent=2).encode())


def write_plan(
    job: JobConfig,
    options: StorageOptions,
    key: bytes | None = None,
    sink: Callable[[list[bytes]], object] | None = None,
    manifest: Path | None = None,
    prelisted: Prelisted | None = None,
) -> tuple[Path, int, int]:
    """Stream the plan to a local manifest (one message per line) and into the store.

    With a `sink` (a publisher), lines go out in chunks while planning goes on, so workers
    start on the first mini-batches while a big input is still being listed.
    Returns (local manifest, batches, items); the manifest is `manifest` when given (its folder is
    the caller's), else a file in a new temporary folder.
    """
    local = manifest or new_manifest(job.store_uri)
    batches = items = 0
    chunk: list[bytes] = []
    chunk_size = FIRST_CHUNK
    try:
        with open(local, "wb") as out:
            for line, count in encoded_plan(job, options, key, prelisted):
                chunk.append(line)
                batches += 1
                items += count
                if len(chunk) >= chunk_size:
                    _hand_over(out, chunk, sink)
                    chunk, chunk_size = [], min(chunk_size * 2, PUBLISH_CHUNK)
            _hand_over(out, chunk, sink)
        _store_plan(local, JobArea(job.store_uri).plan, options)
    except BaseException:
        shutil.rmtree(local.parent, ignore_errors=True)
        raise
    return local, batches, items


def _store_plan(local: Path, uri: str, options: StorageOptions) -> None:
    """The manifest becomes the job area's plan: a hard link when both are on one local disk."""
    if not is_remote(uri):
        target = Path(uri)
        linked = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.link(local, linked)
            os.replace(linked, target)
            return
        except OSError:
            linked.unlink(missing_ok=True)  # another disk, or links not supported: copy it
    open_storage(uri, options).upload(local, uri)


def _hand_over(out: BinaryIO, chunk: list[bytes], sink: Callable[[list[bytes]], object] | None) -> None:
    """A chunk of plan lines into the manifest (one write) and to the publisher."""
    if not chunk:
        return
    out.write(b"\n".join(chunk))
    out.write(b"\n")
    if sink is not None:
        out.flush()  # a sink may read the lines back from the manifest (plan/feed.py)
        sink(chunk)


class StreamPublisher:
    """Publishes plan chunks on its own thread as one confirmed stream.

    Planning hands chunks over and goes on; confirms are awaited once, at `close()`. A broker
    that delivers as it publishes (the in-memory one) does not need this: call publish directly.
    """

    def __init__(self, broker: Broker, queue_name: str, per_message: int = 1) -> None:
        self._broker = broker
        self._queue_name = queue_name
        self._per_message = per_message
        self._chunks: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._sent = 0
        self._thread = threading.Thread(target=self._run, name="bf-publish", daemon=True)
        self._thread.start()

    def __call__(self, chunk: list[bytes]) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(chunk)

    def _bodies(self) -> Iterator[bytes]:
        while (chunk := self._chunks.get()) is not None:
            yield from chunk

    def _run(self) -> None:
        try:
            self._sent = self._broker.publish(self._queue_name, self._bodies(), self._per_message)
        except BaseException as exc:
            self._error = exc
            while self._chunks.get() is not None:
                pass  # keep taking chunks, so the planner never blocks on a full queue

    def close(self) -> int:
        """Wait until everything handed over is confirmed; return how many were published."""
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._sent


def read_plan(manifest: Path) -> Iterator[BatchMessage]:
    with open(manifest, encoding="utf-8") as handle:
        for line in handle:
            yield BatchMessage.model_validate_json(line)


def publish_plan(broker: Broker, job: JobConfig, manifest: Path, skip: Callable[[int], bool] | None = None) -> int:
    """Publish every planned batch for which `skip` is not true, in confirmed chunks; return how many."""
    names = queue_names(job.job_id)
    sent = 0
    chunk: list[bytes] = []
    with open(manifest, "rb") as handle:
        for batch_id, line in enumerate(handle):
            if skip is not None and skip(batch_id):
                continue
            chunk.append(line.rstrip(b"\n"))
            if len(chunk) >= PUBLISH_CHUNK:
                sent += broker.publish(names.batches, chunk, job.batches_per_message)
                chunk = []
    if chunk:
        sent += broker.publish(names.batches, chunk, job.batches_per_message)
    log.info("published %d mini-batches for %s", sent, job.job_id)
    return sent


def fetch_manifest(job: JobConfig, options: StorageOptions) -> Path:
    """A local copy of the stored plan (for resume and coordinator restarts), copied as a stream."""
    local = scratch_dir("plan") / PLAN_FILE
    uri = JobArea(job.store_uri).plan
    try:
        if is_remote(uri):
            open_storage(uri, options).download(uri, local)
        else:
            shutil.copyfile(uri, local)
    except BaseException:
        shutil.rmtree(local.parent, ignore_errors=True)
        raise
    return local


def mark_published(job: JobConfig, options: StorageOptions) -> None:
    """Every planned batch is on the queue: a restarted coordinator must not publish again."""
    uri = JobArea(job.store_uri).published
    open_storage(uri, options).write_bytes(uri, b"1")


def was_published(job: JobConfig, options: StorageOptions) -> bool:
    uri = JobArea(job.store_uri).published
    return open_storage(uri, options).exists(uri)


def plan_size(manifest: Path) -> tuple[int, int]:
    """(batches, items) of a stored plan, read line by line.

    A file item is one `"uri":` (a quote inside a JSON string is escaped, so names cannot fake
    one); lines that may count otherwise (table rows, partitions) are parsed.
    """
    batches = items = 0
    with open(manifest, "rb") as handle:
        for line in handle:
            batches += 1
            if b'"rows":' in line or b'"partition":' in line:
                items += sum(item.get("rows") or 1 for item in json.loads(line)["items"])
            else:
                items += line.count(b'"uri":')
    return batches, items
