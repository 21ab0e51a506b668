"""Merge committed parts, in mini-batch order, into the job's one output file."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from common.messages import JobConfig
from common.parts.frames import PartReader
from common.parts.rows import merge_parts
from common.storage import StorageOptions, is_remote, join_uri, open_storage
from coordinator.follow.tally import Tally

log = logging.getLogger(__name__)


def merge_output(job: JobConfig, tally: Tally, options: StorageOptions) -> tuple[str, int] | None:
    """Write the merged file; return (its URI, rows) or None for summary_only."""
    settings = job.settings
    if settings.output_action != "append_row":
        return None
    store = open_storage(job.store_uri, options)
    parts = [tally.committed[b].part for b in sorted(tally.committed)]
    with PartReader(store) as reader:
        readers = [(lambda ref=ref: reader.read(ref)) for ref in parts if ref]
        return _merge(job, readers, options)


def _merge(job: JobConfig, readers: Sequence[Callable[[], bytes]], options: StorageOptions) -> tuple[str, int]:
    settings = job.settings
    dest_uri = join_uri(job.output_uri, settings.merged_file_name())
    if not is_remote(dest_uri):
        rows = merge_parts(readers, settings.append_row_format, Path(dest_uri))
        return dest_uri, rows
    with tempfile.TemporaryDirectory(prefix="bf-merge-") as tmp:
        local = Path(tmp) / settings.merged_file_name()
        rows = merge_parts(readers, settings.append_row_format, local)
        open_storage(dest_uri, options).upload(local, dest_uri)
    return dest_uri, rows
