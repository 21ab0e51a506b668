"""Tabular inputs: CSV, Parquet and JSON Lines cut into mini-batches of about N bytes.

Planning reads only metadata: Parquet footers and small windows around each cut point of a
line-based file. A batch never crosses a file. Parquet batches are runs of row groups sized by
their decoded (in-memory) bytes, estimated from the footer; CSV and JSON Lines batches are byte ranges ending at a
line break, sized by file bytes.

CSV limitation: cuts fall on any line break, so a quoted field holding a line break cannot be
split. A file that fits one batch reads fine; in a split file the reader notices an unbalanced
quote in its range and fails that batch with BadDataError (raise mini_batch_size above the
file's size). Rows with more fields than the header are errors; rows with fewer are padded
with missing values, as pandas does.

With partition_keys, batches are one per distinct key combination: by column values when every
key is a column, else by folder (partition_layout, or hive style ``key=value/``); folder keys
that are not columns are added to the DataFrame as string columns. Column keys of CSV and JSON
Lines files are read as strings so every batch compares the same text.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from typing import cast

import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import InputError, UsageError
from common.messages import InputBinding, Item
from common.settings import RunSettings
from common.storage.base import ObjectInfo, Storage
from common.tables.parquet import first_line, group_memory, offset_widths, parquet_file, read_parquet
from common.tables.read import Format, detect_format, key_text, line_at, read_lines
from coordinator.plan.partitions import BatchPlan, check_keys, group_by_values, partition_files

logger = logging.getLogger(__name__)

Schema = dict[str, str | None]
"""Column name -> type text, or None where the format does not say (CSV headers)."""


def _line_ranges(storage: Storage, uri: str, start: int, size: int, target: int) -> Iterator[tuple[int, int]]:
    pos = start
    while pos < size:
        cut = pos + target
        end = size if cut >= size else cut - 1 + len(line_at(storage, uri, cut - 1, size))
        yield pos, end - pos
        pos = end


def _csv_names(header: bytes) -> list[str] | None:
    try:
        row = next(csv.reader([header.decode("utf-8-sig").rstrip("\r\n")]), None)
    except (UnicodeDecodeError, csv.Error):
        return None
    return row if row else None


def _parquet_schema(meta: pq.FileMetaData) -> Schema:
    arrow = meta.schema.to_arrow_schema()
    return {f.name: str(f.type) for f in arrow if not f.name.startswith("__index_level_")}


def _schema_diff(first: Schema, other: Schema) -> str | None:
    only_first = [name for name in first if name not in other]
    only_other = [name for name in other if name not in first]
    if only_first or only_other:
        return f"columns {only_first or '[]'} vs {only_other or '[]'}"
    for name, kind in first.items():
        if kind is not None and other[name] is not None and kind != other[name]:
            return f"column {name!r} is {kind} vs {other[name]}"
    return None


class _Planner:
    """Cuts files into units (row-group runs or line ranges), checking one schema across files."""

    def __init__(self, storage: Storage, target: int) -> None:
        self.storage = storage
        self.target = target
        self.reference: tuple[str, Schema] | None = None
        self._last: tuple[str, tuple[Schema | None, pq.FileMetaData | None, int]] | None = None

    def columns(self, info: ObjectInfo) -> list[str]:
        """The column names of one file (empty when unreadable: its batch will fail)."""
        if detect_format(info.rel) == "jsonl":
            try:
                record = json.loads(line_at(self.storage, info.uri, 0, info.size)) if info.size else None
            except ValueError:
                record = None
            return list(record) if isinstance(record, dict) else []
        schema, _, _ = self._head(info)
        return list(schema or ())

    def units(self, info: ObjectInfo) -> list[Item]:
        fmt = cast(Format, detect_format(info.rel))
        whole = Item(uri=info.uri, name=info.rel, size=info.size, fmt=fmt)
        if not info.size:
            logger.info("skipping %s: empty file", info.uri)
            return []
        schema, meta, header = self._head(info)
        if schema is None and fmt != "jsonl":
            return [whole]
        if schema is not None:
            self._check(info, schema)
        if meta is not None:
            return self._parquet_units(whole, meta)
        return self._line_units(whole, info.size, header)

    def _head(self, info: ObjectInfo) -> tuple[Schema | None, pq.FileMetaData | None, int]:
        """Schema, Parquet footer and CSV header length of one file; the last file is remembered."""
        if self._last is None or self._last[0] != info.uri:
            self._last = (info.uri, self._read_head(info))
        return self._last[1]

    def _read_head(self, info: ObjectInfo) -> tuple[Schema | None, pq.FileMetaData | None, int]:
        fmt = detect_format(info.rel)
        if fmt == "parquet" and info.size:
            try:
                meta = parquet_file(self.storage, info.uri, info.size)[0].metadata
            except (pa.ArrowException, OSError, ValueError) as exc:
                logger.warning("%s: %s; its batch will fail", info.uri, first_line(exc))
                return None, None, 0
            return _parquet_schema(meta), meta, 0
        if fmt == "csv" and info.size:
            header = line_at(self.storage, info.uri, 0, info.size)
            names = _csv_names(header)
            if names is None:
                logger.warning("%s: unreadable CSV header; its batch will fail", info.uri)
            return (dict.fromkeys(names) if names else None), None, len(header)
        # JSON Lines records may omit optional keys: no schema is compared across files.
        return None, None, 0

    def _check(self, info: ObjectInfo, schema: Schema) -> None:
        if self.reference is None:
            self.reference = (info.uri, schema)
            return
        first_uri, first = self.reference
        diff = _schema_diff(first, schema)
        if diff:
            raise UsageError(
                f"mixed schemas in one input: {first_uri} and {info.uri} differ ({diff})",
                "give every file of a tabular input the same columns and types, or bind them separately",
            )

    def _parquet_units(self, whole: Item, meta: pq.FileMetaData) -> list[Item]:
        units: list[Item] = []
        groups: list[int] = []
        size = rows = 0
        offsets = offset_widths(meta)
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            group_size = group_memory(meta, group, offsets)
            if groups and size + group_size > self.target:
                units.append(whole.model_copy(update={"row_groups": groups, "rows": rows}))
                groups, size, rows = [], 0, 0
            groups.append(index)
            size += group_size
            rows += group.num_rows
        if groups:
            units.append(whole.model_copy(update={"row_groups": groups, "rows": rows}))
        return units

    def _line_units(self, whole: Item, size: int, header: int) -> list[Item]:
        units: list[Item] = []
        for offset, length in _line_ranges(self.storage, whole.uri, header, size, self.target):
            if not units and whole.fmt == "csv":
                # The first range keeps the header; later ranges get it prepended by the reader.
                offset, length = 0, offset + length
            units.append(whole.model_copy(update={"offset": offset, "length": length}))
        return units


def _tabular_files(storage: Storage, uri: str) -> Iterator[ObjectInfo]:
    found = False
    for info in storage.list(uri):
        if detect_format(info.rel) is None:
            logger.info("skipping %s: not a CSV, Parquet or JSON Lines file", info.uri)
            continue
        found = True
        yield info
    if not found:
        raise InputError(
            f"no CSV, Parquet or JSON Lines files in {uri}",
            "a tabular input takes .csv, .parquet, .pq, .jsonl or .ndjson files",
        )


def _batch_bytes(settings: RunSettings) -> int:
    """Target bytes per batch; with partition_keys it only sizes the read units, so a count is ignored."""
    try:
        return settings.bytes_per_batch()
    except ValueError as exc:
        if settings.partition_keys:
            return RunSettings().bytes_per_batch()
        raise UsageError(str(exc)) from exc


def plan_tabular(storage: Storage, binding: InputBinding, settings: RunSettings) -> Iterator[BatchPlan]:
    """Batches of a tabular input, in a deterministic order (files sorted, ranges by offset)."""
    planner = _Planner(storage, _batch_bytes(settings))
    files = _tabular_files(storage, binding.uri)
    keys = settings.partition_keys
    if not keys:
        for info in files:
            for unit in planner.units(info):
                yield BatchPlan([unit], None)
        return
    first = next(files)
    rest = itertools.chain([first], files)
    layout = settings.partition_layout
    if layout is None:
        columns = planner.columns(first)
        missing = [key for key in keys if key not in columns]
        if not missing:
            yield from _by_columns(storage, planner, rest, keys)
            return
        if not _has_hive_keys(first.rel, keys):
            raise UsageError(
                f"partition key {missing[0]!r} is not a column of {first.uri}; columns: {', '.join(columns)}",
                "name columns in partition_keys, or set partition_layout for folder partitions",
            )
    check_keys(keys, layout)
    for plan in partition_files(rest, keys, layout):
        infos = (ObjectInfo(uri=i.uri, rel=i.name, size=i.size or 0) for i in plan.items)
        yield BatchPlan([unit for info in infos for unit in planner.units(info)], plan.partition)


def _has_hive_keys(rel: str, keys: list[str]) -> bool:
    folders = {seg.split("=", 1)[0] for seg in rel.split("/")[:-1] if "=" in seg}
    return set(keys) <= folders


def _by_columns(
    storage: Storage, planner: _Planner, infos: Iterable[ObjectInfo], keys: list[str]
) -> Iterator[BatchPlan]:
    """Reads only the key columns of every unit, then groups units by the key values they hold."""

    def units() -> Iterator[tuple[Item, set[tuple[str, ...]]]]:
        for info in infos:
            for unit in planner.units(info):
                yield unit, _unit_combos(storage, unit, keys)

    yield from group_by_values(units(), keys)


def _unit_combos(storage: Storage, unit: Item, keys: list[str]) -> set[tuple[str, ...]]:
    if unit.fmt == "parquet":
        table = read_parquet(storage, unit, keys)
        texts = [key_text(table.column(key), key).to_pylist() for key in keys]
    else:
        frame = read_lines(storage, unit, keys, {})
        texts = [frame[key].fillna("").astype(str).tolist() for key in keys]
    return set(zip(*texts, strict=True))
