"""A table batch as run() gets it: its items read into one DataFrame, filtered to its partition."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import BadDataError
from common.messages import Item
from common.parts.rows import release_arrow_memory
from common.storage.base import Storage
from common.tables.parquet import read_parquet
from common.tables.read import key_text, read_lines


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
            equal = pc.equal(key_text(table.column(key), key), value)
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
        frame = read_lines(storage, item, list(partition or ()), headers)
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
