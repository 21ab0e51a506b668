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
import io
import itertools
import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, cast

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import BadDataError, InputError, UsageError
from common.messages import InputBinding, Item
from common.parts.rows import release_arrow_memory
from common.settings import RunSettings
from common.storage.base import ObjectInfo, Storage
from common.tables.parquet import (
    first_line,
    group_memory,
    offset_widths,
    parquet_file,
    read_parquet,
)
from coordinator.plan.partitions import BatchPlan, check_keys, group_by_values, partition_files

logger = logging.getLogger(__name__)

Format = Literal["csv", "parquet", "jsonl"]
Schema = dict[str, str | None]
"""Column name -> type text, or None where the format does not say (CSV headers)."""

_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_WINDOW = 4 * 1024  # first read at a cut point; lines are usually far shorter


def detect_format(name: str) -> Format | None:
    """The tabular format of a file name by its extension, or None."""
    base = name.rsplit("/", 1)[-1].lower()
    dot = base.rfind(".")
    return _EXTENSIONS.get(base[dot:]) if dot > 0 else None


def _line_at(storage: Storage, uri: str, pos: int, size: int) -> bytes:
    """Bytes from `pos` through the next line break (or the end), read in growing small windows."""
    data = b""
    window = _WINDOW
    while pos + len(data) < size:
        chunk = storage.read_range(uri, pos + len(data), min(window, size - pos - len(data)))
        end = chunk.find(b"\n")
        if end >= 0:
            return data + chunk[: end + 1]
        if not chunk:
            break
        data += chunk
        window *= 2
    return data


def _line_ranges(storage: Storage, uri: str, start: int, size: int, target: int) -> Iterator[tuple[int, int]]:
    pos = start
    while pos < size:
        cut = pos + target
        end = size if cut >= size else cut - 1 + len(_line_at(storage, uri, cut - 1, size))
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
                record = json.loads(_line_at(self.storage, info.uri, 0, info.size)) if info.size else None
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
            header = _line_at(self.storage, info.uri, 0, info.size)
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


def _key_text(column: pa.ChunkedArray | pa.Array, key: str) -> pa.ChunkedArray | pa.Array:
    """Key values as text, nulls as "": the same rule at plan time and when filtering."""
    try:
        return pc.fill_null(pc.cast(column, pa.string()), "")
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        raise UsageError(f"partition key column {key!r} of type {column.type} cannot be used as a key") from exc


def _unit_combos(storage: Storage, unit: Item, keys: list[str]) -> set[tuple[str, ...]]:
    if unit.fmt == "parquet":
        table = read_parquet(storage, unit, keys)
        texts = [_key_text(table.column(key), key).to_pylist() for key in keys]
    else:
        frame = _read_lines(storage, unit, keys, {})
        texts = [frame[key].fillna("").astype(str).tolist() for key in keys]
    return set(zip(*texts, strict=True))


def _read_lines(storage: Storage, item: Item, keys: list[str], headers: dict[str, bytes]) -> pd.DataFrame:
    """One CSV or JSON Lines byte range; partition key columns are read as text."""
    size = item.size if item.size is not None else storage.size(item.uri)
    offset = item.offset or 0
    length = item.length if item.length is not None else size - offset
    data = storage.read_range(item.uri, offset, length)
    dtype = dict.fromkeys(keys, str) if keys else None
    if item.fmt == "jsonl":
        try:
            return pd.read_json(io.BytesIO(data), lines=True, dtype=dtype or True) if data.strip() else pd.DataFrame()
        except ValueError as exc:
            raise BadDataError(f"{item.uri}: bad JSON Lines near byte {offset}: {first_line(exc)}") from exc
    if (offset > 0 or offset + length < size) and data.count(b'"') % 2:
        raise BadDataError(
            f"{item.uri}: a quoted CSV field spans a line break at a batch boundary near byte {offset}",
            "quoted multi-line fields need the file in one batch: raise mini_batch_size above its size",
        )
    if offset > 0:
        if item.uri not in headers:
            headers[item.uri] = _line_at(storage, item.uri, 0, size)
        data = headers[item.uri] + data
    try:
        with warnings.catch_warnings():
            # A first row longer than the header makes pandas drop fields with only a warning.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(io.BytesIO(data), on_bad_lines="error", index_col=False, dtype=dtype)
    except (ValueError, pd.errors.ParserWarning, pd.errors.EmptyDataError) as exc:
        raise BadDataError(f"{item.uri}: bad CSV near byte {offset}: {first_line(exc)}") from exc


def _filter_frame(frame: pd.DataFrame, partition: dict[str, str]) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for key, value in partition.items():
        if key in frame.columns:
            mask &= frame[key].fillna("").astype(str) == value
    return frame if bool(mask.all()) else frame[mask]


def _add_folder_keys(frame: pd.DataFrame, partition: dict[str, str]) -> pd.DataFrame:
    """Folder partition keys that are not columns become constant string columns."""
    extra = {key: value for key, value in partition.items() if key not in frame.columns}
    return frame.assign(**extra) if extra else frame


def _filter_table(table: pa.Table, partition: dict[str, str]) -> pa.Table:
    mask = None
    for key, value in partition.items():
        if key in table.column_names:
            equal = pc.equal(_key_text(table.column(key), key), value)
            mask = equal if mask is None else pc.and_(mask, equal)
    return table.filter(mask) if mask is not None else table


def _read_item(
    storage: Storage, item: Item, partition: dict[str, str] | None, headers: dict[str, bytes]
) -> pd.DataFrame:
    if item.fmt == "parquet":
        table = read_parquet(storage, item, None)
        if partition:
            table = _filter_table(table, partition)
        # Frees Arrow buffers column by column while converting: lower peak memory per worker.
        frame = table.to_pandas(split_blocks=True, self_destruct=True)
        del table
        release_arrow_memory()
    elif item.fmt in ("csv", "jsonl"):
        frame = _read_lines(storage, item, list(partition or ()), headers)
        if partition:
            frame = _filter_frame(frame, partition)
    else:
        raise BadDataError(f"{item.uri}: not a tabular item (no format)")
    return _add_folder_keys(frame, partition) if partition else frame


def read_batch(storage: Storage, items: list[Item], partition: dict[str, str] | None) -> pd.DataFrame:
    """The batch's rows as one DataFrame: only its own ranges are read; BadDataError when unparsable."""
    release_arrow_memory()  # what the previous batch freed
    headers: dict[str, bytes] = {}
    frames = [_read_item(storage, item, partition, headers) for item in items]
    # Empty pieces only add dtype noise (and a pandas warning) to the concatenation.
    kept = [frame for frame in frames if len(frame)] or frames[:1]
    if not kept:
        return pd.DataFrame()
    if len(kept) == 1:
        return kept[0].reset_index(drop=True)
    return pd.concat(kept, ignore_index=True)


def warm_reader(scratch: Path) -> None:
    """Read a tiny Parquet table the way batches are read, before user code loads.

    The reader's code and first allocations then belong to the worker's idle size, not to its
    first batch; and a broken pyarrow install fails init, before any message is taken.
    """
    from common.storage.local import LocalStorage

    path = scratch / f".bf-warm-{os.getpid()}.parquet"  # children share the working folder
    table = pa.table({"i": pa.array(range(64)), "x": pa.array([0.5] * 64), "s": pa.array(["warm"] * 64)})
    try:
        pq.write_table(table, path)
        item = Item(uri=str(path), name=path.name, fmt="parquet", row_groups=[0], rows=64)
        read_batch(LocalStorage(), [item], None)
    finally:
        path.unlink(missing_ok=True)
    release_arrow_memory()
