"""The plan as the bytes that go on the wire and into plan.jsonl, a million lines in seconds.

Plain files cut into batches by count (the common case) are planned from runs of names
(`Storage.list_names`: a folder or a listing page at a time) straight into JSON text: each name is
escaped once by the json module's C encoder and pasted into its item, with no dict, model or
object per file. The text is what `json.dumps(..., sort_keys=True, separators=(",", ":"))` makes
of the message, so it is its canonical form and is signed as it is (common/signing.py). Other
inputs (tables, partitions) go through `plan_lines`' dicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from json.encoder import encode_basestring_ascii as escaped  # type: ignore[attr-defined]
from typing import TYPE_CHECKING

from common.errors import UsageError
from common.messages import WIRE_VERSION, InputBinding, JobConfig
from common.signing import sign_message, sign_planned
from common.storage import NameRun, StorageOptions
from coordinator.plan.files import by_count, input_plan, name_runs

if TYPE_CHECKING:
    from common.storage.prelist import Prelisted

# A planned batch as it is sent and stored: its JSON line, and how many items it holds.
PlanLine = tuple[bytes, int]
SLICE = 4096  # names turned into items at a time


def encoded_plan(
    job: JobConfig, options: StorageOptions, key: bytes | None = None, prelisted: Prelisted | None = None
) -> Iterator[PlanLine]:
    """Every mini-batch of the job as its (signed) wire line, numbered in merge order (`prelisted`:
    local folders whose listing started ahead, common/storage/prelist.py)."""
    batch_id = 0
    encoder = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps builds one per call
    for name in job.input_data:
        binding = job.inputs[name]
        if by_count(binding, job):
            try:
                per_batch = job.settings.files_per_batch()
            except ValueError as exc:
                raise UsageError(f"setting mini_batch_size: {exc}") from exc
            runs = name_runs(binding, options, prelisted)
            for line, count in _file_lines(runs, binding, job, per_batch, batch_id, key):
                yield line, count
                batch_id += 1
            continue
        for message in input_plan(job, name, options, batch_id):
            if key is not None:
                sign_planned(key, message)
            yield encoder.encode(message).encode(), sum(item.get("rows") or 1 for item in message["items"])
            batch_id += 1


def _file_lines(
    runs: Iterator[NameRun], binding: InputBinding, job: JobConfig, per_batch: int, first_id: int, key: bytes | None
) -> Iterator[PlanLine]:
    head = '{"batch_id":'
    middle = f',"input":{escaped(binding.name)},"items":['
    tail = f'],"job_id":{escaped(job.job_id)},"v":{WIRE_VERSION}}}'
    batch_id = first_id
    pending: list[str] = []
    for run in runs:
        # '"prefix' without its closing quote: each name's escape (with its closing quote) completes it.
        rel, uri = escaped(run.rel_prefix)[:-1], escaped(run.uri_prefix)[:-1]
        for first in range(0, len(run.names), SLICE):  # a flat folder of a million names, a slice at a time
            quoted = [escaped(name)[1:] for name in run.names[first : first + SLICE]]
            pending += [f'{{"name":{rel}{q},"uri":{uri}{q}}}' for q in quoted]
            if len(pending) < per_batch:
                continue
            full = len(pending) - len(pending) % per_batch
            for start in range(0, full, per_batch):
                items = pending[start : start + per_batch]
                yield _line(head, batch_id, middle, items, tail, job.job_id, key), per_batch
                batch_id += 1
            del pending[:full]
    if pending:
        yield _line(head, batch_id, middle, pending, tail, job.job_id, key), len(pending)


def _line(head: str, batch_id: int, middle: str, items: list[str], tail: str, job_id: str, key: bytes | None) -> bytes:
    line = f"{head}{batch_id}{middle}{','.join(items)}{tail}".encode("ascii")
    if key is None:
        return line
    return line[:-1] + b',"sig":"' + sign_message(key, job_id, batch_id, line).encode("ascii") + b'"}'
