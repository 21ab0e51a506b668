"""Cut the job's inputs into mini-batches, streaming: listing never holds every item at once.

Plain-file plans are built as wire dicts directly: a million files through pydantic costs
seconds, and every worker validates the message it receives anyway (see `plan_lines`).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from common.errors import InputError, StorageError, UsageError
from common.messages import WIRE_VERSION, BatchMessage, InputBinding, Item, JobConfig
from common.storage import NameRun, ObjectInfo, StorageOptions, is_remote, open_storage
from coordinator.plan.collisions import Collisions
from coordinator.plan.partitions import BatchPlan, partition_files

if TYPE_CHECKING:
    from common.storage.prelist import Prelisted

# A planned batch in its wire form (BatchMessage.model_dump(exclude_none=True)).
PlannedBatch = dict[str, Any]


def _listing(binding: InputBinding, options: StorageOptions, sizes: bool = True) -> Iterator[ObjectInfo]:
    try:
        yield from _list_input(binding, options, sizes)
    except StorageError as exc:
        raise InputError(f"input {binding.name}: {exc.message}", exc.hint) from exc


def _list_input(binding: InputBinding, options: StorageOptions, sizes: bool) -> Iterator[ObjectInfo]:
    storage = open_storage(binding.uri, options)
    if not is_remote(binding.uri) and not storage.exists(binding.uri):
        raise InputError(f"input {binding.name}: {binding.uri} does not exist", "check the path given with --input")
    seen = False
    for info in storage.list(binding.uri, sizes):
        seen = True
        yield info
    if not seen:
        where = "holds no files" if not is_remote(binding.uri) else "holds no objects (or the prefix is wrong)"
        raise InputError(f"input {binding.name}: {binding.uri} {where}", "point --input at a folder with data")


def name_runs(binding: InputBinding, options: StorageOptions, prelisted: Prelisted | None = None) -> Iterator[NameRun]:
    """The input's files a folder (or a listing page) at a time; errors name the input."""
    try:
        storage = open_storage(binding.uri, options)
        if not is_remote(binding.uri) and not storage.exists(binding.uri):
            raise InputError(f"input {binding.name}: {binding.uri} does not exist", "check the path given with --input")
        seen = False
        runs = (prelisted.take(binding.uri) if prelisted is not None else None) or storage.list_names(binding.uri)
        if downloaded(binding):
            runs = Collisions(binding, storage).runs(runs)
        for run in runs:
            seen = seen or bool(run.names)
            yield run
    except StorageError as exc:
        raise InputError(f"input {binding.name}: {exc.message}", exc.hint) from exc
    if not seen:
        where = "holds no files" if not is_remote(binding.uri) else "holds no objects (or the prefix is wrong)"
        raise InputError(f"input {binding.name}: {binding.uri} {where}", "point --input at a folder with data")


def by_count(binding: InputBinding, job: JobConfig) -> bool:
    """Plain files cut into batches by count: planned from runs of names (coordinator/plan/lines.py)."""
    return binding.kind != "tabular" and not job.settings.partition_keys


def downloaded(binding: InputBinding) -> bool:
    """Objects a node downloads by their keys (these must not share a local file: plan/collisions.py)."""
    return binding.kind == "files" and binding.mode == "download" and is_remote(binding.uri)


def _download_listing(binding: InputBinding, options: StorageOptions, sizes: bool = True) -> Iterator[ObjectInfo]:
    listing = _listing(binding, options, sizes)
    return Collisions(binding, open_storage(binding.uri, options)).listing(listing) if downloaded(binding) else listing


def _item_dicts(items: list[Item]) -> list[dict[str, Any]]:
    return [item.model_dump(exclude_none=True) for item in items]


def _file_batches(
    binding: InputBinding, job: JobConfig, options: StorageOptions
) -> Iterator[tuple[list[dict[str, Any]], dict[str, str] | None]]:
    settings = job.settings
    try:
        per_batch = settings.files_per_batch()
    except ValueError as exc:
        raise UsageError(f"setting mini_batch_size: {exc}") from exc
    if settings.partition_keys:
        listing = _download_listing(binding, options)
        for plan in partition_files(listing, settings.partition_keys, settings.partition_layout):
            yield _item_dicts(plan.items), plan.partition
        return
    # Batches by count need no sizes; a stat per local file would double the listing time.
    listing = _download_listing(binding, options, sizes=False)
    while chunk := list(islice(listing, per_batch)):
        yield [{"uri": i.uri, "name": i.rel} if i.size is None else {"uri": i.uri, "name": i.rel, "size": i.size}
               for i in chunk], None  # fmt: skip


def _named(binding: InputBinding, plans: Iterator[BatchPlan]) -> Iterator[BatchPlan]:
    """Storage errors while planning an input name the input."""
    try:
        yield from plans
    except StorageError as exc:
        raise InputError(f"input {binding.name}: {exc.message}", exc.hint) from exc


def _tabular_batches(
    binding: InputBinding, job: JobConfig, options: StorageOptions
) -> Iterator[tuple[list[dict[str, Any]], dict[str, str] | None]]:
    from coordinator.plan.tables import plan_tabular

    for plan in _named(binding, plan_tabular(open_storage(binding.uri, options), binding, job.settings)):
        yield _item_dicts(plan.items), plan.partition


def plan_lines(job: JobConfig, options: StorageOptions) -> Iterator[PlannedBatch]:
    """Every mini-batch of the job in wire form, numbered in merge order (None fields left out)."""
    batch_id = 0
    for name in job.input_data:
        for message in input_plan(job, name, options, batch_id):
            yield message
            batch_id += 1


def input_plan(job: JobConfig, name: str, options: StorageOptions, first_id: int) -> Iterator[PlannedBatch]:
    """The mini-batches of one input, numbered from `first_id`."""
    binding = job.inputs[name]
    planner = _tabular_batches if binding.kind == "tabular" else _file_batches
    for batch_id, (items, partition) in enumerate(planner(binding, job, options), first_id):
        message: PlannedBatch = {"v": WIRE_VERSION, "job_id": job.job_id, "batch_id": batch_id, "input": name}
        message["items"] = items
        if partition is not None:
            message["partition"] = partition
        yield message


def plan_batches(job: JobConfig, options: StorageOptions) -> Iterator[BatchMessage]:
    """Every mini-batch of the job as validated messages (for `debug` and tests)."""
    for message in plan_lines(job, options):
        yield BatchMessage.model_validate(message)
