"""Parquet for tabular inputs: ranged reads of a batch's row groups, decoded-size estimates.

A worker reads only its batch's column chunks (one ranged GET per span on object storage) and
decodes them a column at a time, so its scratch memory is one column, not the batch.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import BadDataError
from common.messages import Item
from common.parts.rows import release_arrow_memory
from common.storage.base import Storage
from common.storage.local import LocalStorage

_TAIL = 64 * 1024
_MERGE_GAP = 1024 * 1024
_RELEASE_EVERY = 1024 * 1024  # decoded bytes between handing freed memory back to the OS
_WIDTHS = {"INT32": 4, "INT64": 8, "INT96": 8, "FLOAT": 4, "DOUBLE": 8}  # bytes per value, decoded


def first_line(exc: BaseException) -> str:
    """An exception's first line, for one-line error messages."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class RangeFile(io.RawIOBase):
    """A read-only file over Storage.read_range, serving cached blocks from memory.

    pyarrow reads Parquet through it; caching the footer and each needed span up front turns
    many small reads into one ranged GET each.
    """

    def __init__(self, storage: Storage, uri: str, size: int) -> None:
        super().__init__()
        self._storage, self._uri, self._size = storage, uri, size
        self._pos = 0
        self._blocks: list[tuple[int, bytes]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def cache(self, offset: int, length: int) -> None:
        """Fetch [offset, offset+length) once; later reads inside it cost nothing."""
        length = min(length, self._size - offset)
        if length > 0:
            self._blocks.append((offset, self._storage.read_range(self._uri, offset, length)))

    def cache_tail(self) -> None:
        start = max(0, self._size - _TAIL)
        self.cache(start, self._size - start)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._size - self._pos)
        if count <= 0:
            return 0
        data = self._fetch(self._pos, count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _fetch(self, pos: int, count: int) -> bytes | memoryview:
        for start, block in self._blocks:
            if start <= pos and pos + count <= start + len(block):
                return memoryview(block)[pos - start : pos - start + count]
        return self._storage.read_range(self._uri, pos, count)


def parquet_file(storage: Storage, uri: str, size: int | None) -> tuple[pq.ParquetFile, RangeFile | None]:
    """A local file opened directly; a remote one through ranged reads, its footer fetched."""
    if isinstance(storage, LocalStorage):
        return pq.ParquetFile(uri), None
    handle = RangeFile(storage, uri, size if size is not None else storage.size(uri))
    handle.cache_tail()
    return pq.ParquetFile(handle), handle


def _chunk_ranges(meta: pq.FileMetaData, groups: list[int], columns: list[str] | None) -> list[tuple[int, int]]:
    """Byte spans of the needed column chunks, merged when close, so each span is one GET."""
    spans: list[tuple[int, int]] = []
    for group in groups:
        row_group = meta.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            top = chunk.path_in_schema.split(".", 1)[0]
            if columns is not None and top not in columns:
                continue
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                start = min(start, chunk.dictionary_page_offset)
            spans.append((start, start + chunk.total_compressed_size))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] <= _MERGE_GAP:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return [(start, end - start) for start, end in merged]


def read_parquet(storage: Storage, item: Item, columns: list[str] | None) -> pa.Table:
    """The item's row groups (all when unset), these columns or all; BadDataError if unreadable."""
    try:
        parquet, handle = parquet_file(storage, item.uri, item.size)
        groups = item.row_groups if item.row_groups is not None else list(range(parquet.num_row_groups))
        if handle is not None:
            for start, length in _chunk_ranges(parquet.metadata, groups, columns):
                handle.cache(start, length)
        return _read_columns(parquet, groups, columns)
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        raise BadDataError(f"{item.uri}: not a readable Parquet file: {first_line(exc)}") from exc


def _read_columns(parquet: pq.ParquetFile, groups: list[int], columns: list[str] | None) -> pa.Table:
    """The row groups' columns decoded one at a time, each in a single chunk.

    Decoding column by column bounds the reader's scratch (compressed pages, decoded pieces) to
    one column instead of the whole batch; one chunk per column lets to_pandas hand the buffers
    to pandas without copying them.
    """
    schema = parquet.schema_arrow
    fields: list[pa.Field] = []
    arrays: list[pa.ChunkedArray] = []
    decoded = 0
    for name in dict.fromkeys(columns if columns is not None else schema.names):
        piece = parquet.read_row_groups(groups, columns=[name], use_threads=False, use_pandas_metadata=False)
        piece = piece.combine_chunks()
        fields.extend(piece.schema)
        arrays.extend(piece.columns)
        decoded += piece.nbytes
        del piece
        if decoded >= _RELEASE_EVERY:
            release_arrow_memory()
            decoded = 0
    # The file's schema metadata carries pandas' index and dtypes, as a whole-table read would.
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema.metadata))


def offset_widths(meta: pq.FileMetaData) -> list[int]:
    """Bytes per value offset of each leaf column once decoded: 8 for Arrow's large types."""
    arrow = meta.schema.to_arrow_schema()
    large = {f.name for f in arrow if pa.types.is_large_string(f.type) or pa.types.is_large_binary(f.type)}
    return [8 if meta.schema.column(i).path.split(".")[0] in large else 4 for i in range(meta.num_columns)]


def group_memory(meta: pq.FileMetaData, group: pq.RowGroupMetaData, offsets: list[int]) -> int:
    """A row group's estimated size once decoded: batches are cut by memory, not by file bytes.

    The footer's uncompressed size counts a numeric column's trial dictionary page and only the
    dictionary and indices of a dictionary-encoded text column; decoded, numbers take their
    width and texts an offset plus their bytes (guessed from the min/max statistics).
    """
    total = 0
    for index in range(group.num_columns):
        chunk, column = group.column(index), meta.schema.column(index)
        width = _WIDTHS.get(column.physical_type) or (column.length if column.length > 0 else 0)
        if str(column.logical_type).startswith("Decimal"):
            width = 16  # Arrow holds Parquet decimals as decimal128
        if width:
            total += chunk.num_values * width
        elif column.physical_type == "BOOLEAN":
            total += chunk.num_values // 8 + 1
        else:
            stats = chunk.statistics if chunk.is_stats_set else None
            texts = (stats.min, stats.max) if stats is not None and stats.has_min_max else ()
            text = sum(len(t) for t in texts if isinstance(t, (str, bytes))) // 2
            guess = chunk.num_values * (offsets[index] + text)
            total += guess if chunk.has_dictionary_page else max(chunk.total_uncompressed_size, guess)
    return total
