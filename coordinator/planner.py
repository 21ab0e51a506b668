"""Cut the job's inputs into mini-batches, streaming: listing never holds every item at once."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from common.errors import InputError, StorageError, UsageError
from common.messages import BatchMessage, InputBinding, Item, JobConfig
from common.partitions import BatchPlan, partition_files
from common.storage import ObjectInfo, StorageOptions, is_remote, open_storage


def _listing(binding: InputBinding, options: StorageOptions) -> Iterator[ObjectInfo]:
    try:
        yield from _list_input(binding, options)
    except StorageError as exc:
        raise InputError(f"input {binding.name}: {exc.message}", exc.hint) from exc


def _list_input(binding: InputBinding, options: StorageOptions) -> Iterator[ObjectInfo]:
    storage = open_storage(binding.uri, options)
    if not is_remote(binding.uri) and not storage.exists(binding.uri):
        raise InputError(f"input {binding.name}: {binding.uri} does not exist", "check the path given with --input")
    seen = False
    for info in storage.list(binding.uri):
        seen = True
        yield info
    if not seen:
        where = "holds no files" if not is_remote(binding.uri) else "holds no objects (or the prefix is wrong)"
        raise InputError(f"input {binding.name}: {binding.uri} {where}", "point --input at a folder with data")


def _file_batches(binding: InputBinding, job: JobConfig, options: StorageOptions) -> Iterator[BatchPlan]:
    settings = job.settings
    try:
        per_batch = settings.files_per_batch()
    except ValueError as exc:
        raise UsageError(f"setting mini_batch_size: {exc}") from exc
    listing = _listing(binding, options)
    if settings.partition_keys:
        yield from partition_files(listing, settings.partition_keys, settings.partition_layout)
        return
    while chunk := list(islice(listing, per_batch)):
        # Built from our own listing: model_construct skips re-validating every item.
        yield BatchPlan([Item.model_construct(uri=i.uri, name=i.rel, size=i.size) for i in chunk], None)


def _named(binding: InputBinding, plans: Iterator[BatchPlan]) -> Iterator[BatchPlan]:
    """Storage errors while planning an input name the input."""
    try:
        yield from plans
    except StorageError as exc:
        raise InputError(f"input {binding.name}: {exc.message}", exc.hint) from exc


def plan_batches(job: JobConfig, options: StorageOptions) -> Iterator[BatchMessage]:
    """Every mini-batch of the job, numbered in merge order."""
    batch_id = 0
    for name in job.input_data:
        binding = job.inputs[name]
        if binding.kind == "tabular":
            from common.tabular import plan_tabular

            plans = _named(binding, plan_tabular(open_storage(binding.uri, options), binding, job.settings))
        else:
            plans = _file_batches(binding, job, options)
        for plan in plans:
            yield BatchMessage(
                job_id=job.job_id, batch_id=batch_id, input=name, items=plan.items, partition=plan.partition
            )
            batch_id += 1
