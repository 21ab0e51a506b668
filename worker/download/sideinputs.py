"""Side inputs (a model, a lookup table): bound inputs other than the mini-batched data that point
at remote storage (s3://, and any other scheme the store registry reads), downloaded once per node
per job and kept by ETag across jobs where the store gives ETags.

The script sees a local path where the spec said `{inputs.x}`; `:direct` keeps the URI.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from common.errors import BatchfleetError
from common.messages import InputBinding, JobConfig
from common.safepath import safe_join
from common.storage import StorageOptions, is_remote, open_storage
from worker.download.snapshot import remove_tree, touch

log = logging.getLogger(__name__)

INPUT_CACHE = "inputs"


@dataclass(frozen=True)
class SideInput:
    name: str
    uri: str
    local: Path
    size: int
    seconds: float
    cached: bool
    entry: Path | None = None  # its cache entry (the folder holding it)

    @property
    def folder(self) -> Path:
        return self.entry if self.entry is not None else self.local

    def describe(self) -> str:
        how = "cached" if self.cached else f"downloaded in {self.seconds:.2f} s"
        return f"input {self.name} {self.size:,} bytes {how}"


def side_inputs(job: JobConfig) -> list[InputBinding]:
    """Bound inputs a node fetches before running: on object storage, not mini-batched, not direct."""
    batched = set(job.input_data)
    return [
        binding
        for name, binding in job.inputs.items()
        if name not in batched and binding.kind == "files" and binding.mode == "download" and is_remote(binding.uri)
    ]


def fetch_side_inputs(job: JobConfig, work_root: Path, options: StorageOptions, job_root: Path) -> list[SideInput]:
    """Each side input, from the node's cache when its ETags say it is unchanged."""
    cache, own = work_root / INPUT_CACHE, job_root / INPUT_CACHE
    return [fetch_one(binding, cache, options, own) for binding in side_inputs(job)]


def fetch_one(binding: InputBinding, cache: Path, options: StorageOptions, untagged: Path | None = None) -> SideInput:
    """One input: an object (its file keeps its name) or a folder (everything below the prefix).

    A store that gives no ETags (https://) cannot tell a changed object from the one cached:
    its inputs go to `untagged` (the job's own folder, removed with it) when given.
    """
    started = time.perf_counter()
    storage = open_storage(binding.uri, options)
    objects = list(storage.list(binding.uri))
    if not objects:
        raise BatchfleetError(
            f"input {binding.name}: nothing at {binding.uri}", "check the URI bound with --input and its permissions"
        )
    etags = getattr(storage, "etags", None)
    tags: dict[str, str] = etags(binding.uri) if etags is not None else {}
    if etags is None and untagged is not None:
        cache = untagged
    single = len(objects) == 1 and objects[0].uri == binding.uri.rstrip("/")
    fingerprint = hashlib.sha256(binding.uri.encode())
    for info in objects:
        fingerprint.update(f"\0{info.rel}\0{info.size}\0{tags.get(info.rel, '')}".encode())
    folder = cache / fingerprint.hexdigest()[:32]
    local = safe_join(folder, objects[0].rel) if single else folder
    size = sum(info.size or 0 for info in objects)
    if folder.is_dir():
        touch(folder)
        return SideInput(binding.name, binding.uri, local, size, time.perf_counter() - started, True, folder)
    partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}")
    try:
        for info in objects:
            storage.download(info.uri, safe_join(partial, info.rel))
        try:
            partial.rename(folder)
        except OSError:
            if not folder.is_dir():  # another job on this node made it meanwhile: same content
                raise
    finally:
        remove_tree(partial)
    seconds = time.perf_counter() - started
    log.info("input %s: %d objects, %d bytes in %.2fs", binding.name, len(objects), size, seconds)
    return SideInput(binding.name, binding.uri, local, size, seconds, False, folder)


def localize_args(args: list[str], fetched: list[SideInput]) -> list[str]:
    """argv with each fetched input's URI replaced by its local path (`URI` or `--flag=URI`)."""
    if not fetched:
        return list(args)
    local = {item.uri: str(item.local) for item in fetched}
    local |= {uri.rstrip("/"): path for uri, path in local.items()}
    out = []
    for arg in args:
        head, sep, tail = arg.partition("=")
        if arg in local:
            out.append(local[arg])
        elif sep and tail in local:
            out.append(f"{head}={local[tail]}")
        else:
            out.append(arg)
    return out
