"""How a table item is read: a Parquet run of row groups or a CSV / JSON Lines byte range.

The planner (coordinator/plan/tables.py) reads the same items to find partition key values, and
the worker (worker/run/tables.py) reads them into a batch's DataFrame: both agree here on what a
cut means. Column keys of CSV and JSON Lines files are read as strings, so every batch compares
the same text.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import BadDataError, UsageError
from common.messages import Item
from common.storage.base import Storage
from common.tables.parquet import first_line

Format = Literal["csv", "parquet", "jsonl"]

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


def line_at(storage: Storage, uri: str, pos: int, size: int) -> bytes:
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


def key_text(column: pa.ChunkedArray | pa.Array, key: str) -> pa.ChunkedArray | pa.Array:
    """Key values as text, nulls as "": the same rule at plan time and when filtering."""
    try:
        return pc.fill_null(pc.cast(column, pa.string()), "")
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        raise UsageError(f"partition key column {key!r} of type {column.type} cannot be used as a key") from exc


def read_lines(storage: Storage, item: Item, keys: list[str], headers: dict[str, bytes]) -> pd.DataFrame:
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
            headers[item.uri] = line_at(storage, item.uri, 0, size)
        data = headers[item.uri] + data
    try:
        with warnings.catch_warnings():
            # A first row longer than the header makes pandas drop fields with only a warning.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(io.BytesIO(data), on_bad_lines="error", index_col=False, dtype=dtype)
    except (ValueError, pd.errors.ParserWarning, pd.errors.EmptyDataError) as exc:
        raise BadDataError(f"{item.uri}: bad CSV near byte {offset}: {first_line(exc)}") from exc
