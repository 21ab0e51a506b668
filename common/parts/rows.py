"""How run() results become part files, and how parts merge into the job's output.

The text format is Azure ML's: list elements one per line via str(), DataFrame rows space
separated without header or index. For csv, parquet and jsonl every part is Parquet bytes, so a
DataFrame keeps its column types until the merge; a list result becomes one string column named
``result``. Merging streams one part at a time, as parts come (`PartMerger`). Parts must share
column names; for Parquet output they must share types too, except that a column that is all null
in a later part (pandas stores it as type null) is cast to the first part's type, and numbers,
texts or timestamps that differ only in width (int vs float from pandas' gaps) are cast safely;
a lossy cast is an error.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from common.errors import BatchfleetError

# Here rather than with the settings model: child processes encode parts without loading pydantic.
RowFormat = Literal["text", "csv", "parquet", "jsonl"]

# Rows per slice converted to pandas when writing CSV or JSON Lines, to bound memory.
_SLICE_ROWS = 65536
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_MMAP_THRESHOLD = 256 * 1024


class RowFormatError(BatchfleetError):
    """A result or part that cannot be written in the chosen row format."""


def is_dataframe(value: object) -> bool:
    """True for a pandas DataFrame, without importing pandas in processes that never use it."""
    return type(value).__module__.startswith("pandas") and type(value).__name__ == "DataFrame"


def part_extension(fmt: RowFormat) -> str:
    return "txt" if fmt == "text" else "parquet"


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def lean_worker_memory(environ: MutableMapping[str, str]) -> None:
    """Call in a worker process before pyarrow loads: allocators that give memory back.

    Arrow's bundled mimalloc and jemalloc keep the pages Arrow frees for Arrow alone, so one
    batch's decoding scratch stays resident beside the next batch and the user's numpy arrays.
    On Linux, Arrow is pointed at glibc's malloc, shared with numpy, whose freed memory
    release_unused() trims; and glibc stops raising its mmap threshold to the largest block
    freed so far, so big arrays are unmapped when freed instead of fragmenting the heap.
    Settings the user chose (ARROW_DEFAULT_MEMORY_POOL, MALLOC_MMAP_THRESHOLD_) stay.
    """
    if not sys.platform.startswith("linux"):
        return
    environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # read once, when Arrow loads
    if "MALLOC_MMAP_THRESHOLD_" in environ:
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return  # not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def release_arrow_memory() -> None:
    """Hand memory that Arrow's pool has freed back to the OS (malloc_trim with the C allocator).

    Between batches and columns: otherwise one batch's decoding scratch stays resident beside
    the next batch and the user's arrays.
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def encode_part(result: Any, fmt: RowFormat) -> bytes:
    """Serialize one batch's run() result as its part file."""
    if fmt == "text":
        if is_dataframe(result):
            text = result.to_csv(sep=" ", header=False, index=False)
            return text.encode("utf-8")
        return "".join(f"{row}\n" for row in result).encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    if is_dataframe(result):
        try:
            table = pa.Table.from_pandas(result, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise RowFormatError(
                f"run() returned a DataFrame that cannot be written as {fmt}: {_short(exc)}",
                "give every column values of one type",
            ) from exc
    else:
        table = pa.table({"result": pa.array([str(row) for row in result], pa.string())})
    sink = io.BytesIO()
    # Dictionary pages pay off for repeated texts; for numbers the writer's trial dictionary
    # (a hash table per column, given up after 1 MiB) costs several times the part's size.
    pq.write_table(table, sink, use_dictionary=_dictionary_columns(table.schema))
    del table
    release_arrow_memory()  # the writer's scratch, before the next batch
    return sink.getvalue()


def _dictionary_columns(schema: Any) -> list[str]:
    """Top-level text, binary and categorical columns: the ones worth dictionary-encoding."""
    import pyarrow as pa

    def wanted(kind: Any) -> bool:
        return bool(
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_dictionary(kind)
            or pa.types.is_string_view(kind)
        )

    return [field.name for field in schema if wanted(field.type)]


def merge_parts(
    parts: Iterable[Callable[[], bytes]], fmt: RowFormat, dest: Path, names: Sequence[str] | None = None
) -> int:
    """Write the parts, already in mini-batch order, into one file at `dest`; return rows written.

    `names` label the parts in error messages (for example "batch 7"); by default "part N".
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    merger = PartMerger(fmt, tmp)
    try:
        for index, read in enumerate(parts):
            merger.add(read(), names[index] if names is not None and index < len(names) else f"part {index}")
        rows = merger.close()
        tmp.replace(dest)
    except BaseException:
        merger.discard()
        raise
    return rows


class PartMerger:
    """Appends parts, in mini-batch order, to one file as they come; `close` finishes it.

    Text parts are copied through; table parts are conformed to the first part's columns and
    written in row groups (Parquet) or slices (CSV, JSON Lines) of up to GROUP_ROWS rows, so
    tiny mini-batches do not make a file of tiny row groups.
    """

    def __init__(self, fmt: RowFormat, path: Path) -> None:
        self.fmt, self.path = fmt, path
        self.rows = 0
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._text = open(path, "wb") if fmt == "text" else None  # closed in close() / discard()
        self._tables = _TableMerge(fmt, path) if fmt != "text" else None

    def add(self, data: bytes, label: str) -> None:
        if self._text is not None:
            self.rows += data.count(b"\n")
            self._text.write(data)
        elif self._tables is not None:
            self.rows += self._tables.add(data, label)

    def flush(self) -> None:
        """Hand what is written to the OS (table rows may still wait to fill a row group)."""
        if self._text is not None and not self._closed:
            self._text.flush()

    def close(self) -> int:
        """Finish the file; return the rows written."""
        if not self._closed:
            self._closed = True
            if self._text is not None:
                self._text.close()
            elif self._tables is not None:
                self._tables.close()
        return self.rows

    def discard(self) -> None:
        """Close, and delete the file unless it was finished and has been moved away."""
        try:
            if not self._closed:
                self._closed = True
                if self._text is not None:
                    self._text.close()
                elif self._tables is not None:
                    self._tables.close(flush=False)
        finally:
            self.path.unlink(missing_ok=True)


GROUP_ROWS = 65_536  # rows gathered from consecutive parts into one row group or slice
GROUP_BYTES = 64 << 20  # ... or this many bytes of Arrow data, whichever comes first


class _TableMerge:
    """Conforms table parts to the first one's columns and writes them in groups."""

    def __init__(self, fmt: RowFormat, path: Path) -> None:
        self.fmt = fmt
        self._writer = _TableWriter(fmt, path)
        self._reference: Any = None
        self._first: Any = None
        self._held: list[Any] = []
        self._held_rows = 0
        self._held_bytes = 0

    def add(self, data: bytes, label: str) -> int:
        if not data:
            return 0  # a batch whose input could not be read commits a part without rows
        table = _load(data, label)
        self._first = self._first or table.schema
        if table.num_rows == 0:
            return 0  # an empty part says nothing reliable about types
        if self._reference is None:
            self._reference = table.schema
        else:
            table = _conform(table, self._reference, self.fmt, label)
        self._held.append(table)
        self._held_rows += table.num_rows
        self._held_bytes += table.nbytes
        if self._held_rows >= GROUP_ROWS or self._held_bytes >= GROUP_BYTES:
            self._flush()
        return int(table.num_rows)

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._held:
            return
        held, self._held, self._held_rows, self._held_bytes = self._held, [], 0, 0
        schema = held[0].schema
        if all(table.schema == schema for table in held[1:]):
            held = [pa.concat_tables(held)] if len(held) > 1 else held
        for table in held:  # CSV and JSON Lines parts may differ in types: written one by one
            self._writer.write(table)

    def close(self, flush: bool = True) -> None:
        try:
            if flush:
                self._flush()
        finally:
            self._writer.close(self._reference or self._first)


def _load(data: bytes, label: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RowFormatError(f"{label}: its part is not readable Parquet: {_short(exc)}") from exc


def _conform(table: Any, reference: Any, fmt: RowFormat, label: str) -> Any:
    """`table` with the reference's column order (and types, for Parquet); RowFormatError if it cannot."""
    import pyarrow as pa

    if sorted(table.column_names) != sorted(reference.names):
        raise RowFormatError(
            f"{label} returned columns {table.column_names}, but earlier batches returned {reference.names}",
            "return the same columns from every run()",
        )
    table = table.select(reference.names)
    if fmt != "parquet":
        return table
    columns = []
    for field in reference:
        column = table.column(field.name)
        if column.type != field.type:
            column = _cast(column, field, label)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=reference)


def _family(kind: Any) -> str:
    import pyarrow as pa

    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if pa.types.is_timestamp(kind):
        return "time"
    return str(kind)


def _cast(column: Any, field: Any, label: str) -> Any:
    """Cast drift that pandas causes between batches (int vs float with gaps, all-null columns), safely."""
    import pyarrow as pa

    problem = f"{label} returned column {field.name!r} as {column.type}, earlier batches {field.type}"
    hint = "return the same column types from every run()"
    if column.type != pa.null() and _family(column.type) != _family(field.type):
        raise RowFormatError(problem, hint)
    try:
        return column.cast(field.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RowFormatError(f"{problem}: {_short(exc)}", hint) from exc


def _json_default(value: Any) -> Any:
    """json.dumps fallback: dates and times as ISO 8601, bytes and anything else as text."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _json_line(row: dict[str, Any]) -> str:
    """One JSON Lines record. Floats keep every digit: DataFrame.to_json rounds to 10 decimal
    places, which turns a probability of 1e-12 into 0. Non-finite floats become null, as there."""
    clean = {key: None if isinstance(v, float) and not math.isfinite(v) else v for key, v in row.items()}
    return json.dumps(clean, default=_json_default, ensure_ascii=False, separators=(",", ":")) + "\n"


class _TableWriter:
    """Appends tables to one CSV (header once), JSON Lines or Parquet file."""

    def __init__(self, fmt: RowFormat, path: Path) -> None:
        self.fmt, self.path = fmt, path
        self._out: IO[Any] | None = None
        self._parquet: Any = None
        self._header = False

    def write(self, table: Any) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
            return
        out = self._stream()
        for start in range(0, table.num_rows, _SLICE_ROWS):
            piece = table.slice(start, _SLICE_ROWS)
            if self.fmt == "csv":
                piece.to_pandas().to_csv(out, header=not self._header, index=False, lineterminator="\n")
                self._header = True
            else:
                out.writelines(_json_line(row) for row in piece.to_pylist())

    def _stream(self) -> IO[Any]:
        if self._out is None:
            self._out = open(self.path, "w", encoding="utf-8", newline="")  # closed in close()
        return self._out

    def close(self, schema: Any) -> None:
        """Finish the file; with nothing written, an empty file that still carries the columns."""
        if self.fmt == "parquet":
            if self._parquet is None:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table((schema or pa.schema([])).empty_table(), self.path)
            else:
                self._parquet.close()
            return
        out = self._stream()
        if self.fmt == "csv" and not self._header and schema is not None and len(schema.names):
            import pandas as pd

            pd.DataFrame(columns=schema.names).to_csv(out, index=False, lineterminator="\n")
        out.close()
