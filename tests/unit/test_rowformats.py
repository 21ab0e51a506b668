"""Row formats: part encoding and streaming merge for text, csv, parquet and jsonl."""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import BatchfleetError
from common.parts.rows import (
    RowFormat,
    RowFormatError,
    encode_part,
    is_dataframe,
    lean_worker_memory,
    merge_parts,
    part_extension,
)


def frame(start: int, rows: int) -> pd.DataFrame:
    ids = list(range(start, start + rows))
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="int64"),
            "score": [i / 4 for i in ids],
            "label": [f'item {i}, quoted "x"' for i in ids],
            "flag": [i % 2 == 0 for i in ids],
            "when": pd.to_datetime([f"2024-01-{1 + i % 28:02d}" for i in ids]),
        }
    )


def readers(parts: list[bytes]) -> list[Callable[[], bytes]]:
    return [functools.partial(bytes, data) for data in parts]


def merge(results: list[Any], fmt: RowFormat, dest: Path, names: list[str] | None = None) -> int:
    return merge_parts(readers([encode_part(r, fmt) for r in results]), fmt, dest, names)


def load(path: Path, fmt: RowFormat) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path, parse_dates=["when"])
    if fmt == "jsonl":
        got = pd.read_json(path, lines=True)
        return got.assign(when=pd.to_datetime(got["when"]))
    return pd.read_parquet(path)


@pytest.mark.parametrize(
    ("fmt", "ext"), [("text", "txt"), ("csv", "parquet"), ("parquet", "parquet"), ("jsonl", "parquet")]
)
def test_part_extension(fmt: RowFormat, ext: str) -> None:
    assert part_extension(fmt) == ext


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_dataframe_round_trip(tmp_path: Path, fmt: RowFormat) -> None:
    parts = [frame(0, 5), frame(5, 0), frame(5, 7)]
    dest = tmp_path / f"out.{fmt}"
    assert merge(parts, fmt, dest) == 12
    got = load(dest, fmt)
    expected = pd.concat([parts[0], parts[2]], ignore_index=True)
    assert list(got.columns) == list(expected.columns)
    assert got["id"].tolist() == list(range(12)), "batch order kept"
    assert got["label"].tolist() == expected["label"].tolist()
    assert got["flag"].tolist() == expected["flag"].tolist()
    assert got["score"].tolist() == expected["score"].tolist()
    assert [str(t.date()) for t in got["when"]] == [str(t.date()) for t in expected["when"]]


def test_csv_header_once(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    merge([frame(0, 3), frame(3, 3), frame(6, 3)], "csv", dest)
    lines = dest.read_text().splitlines()
    assert lines[0] == "id,score,label,flag,when"
    assert sum(line.startswith("id,") for line in lines) == 1
    assert len(lines) == 10
    assert b"\r\n" not in dest.read_bytes()


def test_parquet_keeps_schema(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    merge([frame(0, 3), frame(3, 3)], "parquet", dest)
    schema = pq.read_schema(dest)
    assert schema.field("id").type == pa.int64()
    assert schema.field("score").type == pa.float64()
    assert schema.field("flag").type == pa.bool_()
    assert pa.types.is_timestamp(schema.field("when").type)
    assert pa.types.is_string(schema.field("label").type) or pa.types.is_large_string(schema.field("label").type)
    assert pq.read_metadata(dest).num_rows == 6


def test_jsonl_one_object_per_line(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    merge([frame(0, 2), frame(2, 2)], "jsonl", dest)
    lines = dest.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    assert [json.loads(line)["id"] for line in lines] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", "1\nb\n(3, 4)\nlast\n"),
        ("csv", 'result\n1\nb\n"(3, 4)"\nlast\n'),
        ("jsonl", '{"result":"1"}\n{"result":"b"}\n{"result":"(3, 4)"}\n{"result":"last"}\n'),
    ],
)
def test_list_results(tmp_path: Path, fmt: RowFormat, expected: str) -> None:
    dest = tmp_path / "out"
    assert merge([[1, "b"], ((3, 4),), ["last"]], fmt, dest) == 4
    assert dest.read_text() == expected


def test_list_results_in_parquet(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    merge([[1, 2], ["x"]], "parquet", dest)
    got = pq.read_table(dest)
    assert got.column_names == ["result"] and got.column("result").to_pylist() == ["1", "2", "x"]


def test_text_dataframe_is_azure_style(tmp_path: Path) -> None:
    dest = tmp_path / "parallel_run_step.txt"
    rows = merge([pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})], "text", dest)
    assert rows == 2 and dest.read_text() == "1 x\n2 y\n"


@pytest.mark.parametrize(
    ("fmt", "second", "words"),
    [
        ("csv", pd.DataFrame({"id": [1], "other": [2]}), ["batch 9", "other"]),
        ("jsonl", pd.DataFrame({"id": [1]}), ["batch 9", "columns"]),
        ("parquet", pd.DataFrame({"id": ["one"], "v": [1.0]}), ["batch 9", "'id'", "int64"]),
    ],
)
def test_schema_mismatch_names_the_batch(
    tmp_path: Path, fmt: RowFormat, second: pd.DataFrame, words: list[str]
) -> None:
    first = pd.DataFrame({"id": [1, 2], "v": [0.5, 1.5]})
    dest = tmp_path / "out"
    with pytest.raises(RowFormatError) as caught:
        merge([first, second], fmt, dest, names=["batch 4", "batch 9"])
    assert isinstance(caught.value, BatchfleetError)
    for word in words:
        assert word in caught.value.line()
    assert not dest.exists() and list(tmp_path.iterdir()) == [], "no partial output or temp file left"


def test_types_may_differ_in_text_outputs(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    merge([pd.DataFrame({"id": [1], "v": [1]}), pd.DataFrame({"v": ["two"], "id": [2]})], "csv", dest)
    assert dest.read_text() == "id,v\n1,1\n2,two\n", "columns follow the first batch's order"


def test_all_null_column_in_a_later_batch(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    merge([pd.DataFrame({"id": [1], "err": ["bad"]}), pd.DataFrame({"id": [2], "err": [None]})], "parquet", dest)
    got = pq.read_table(dest)
    assert got.column("err").to_pylist() == ["bad", None]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("csv", "id,v\n"), ("jsonl", ""), ("text", "")],
)
def test_only_empty_parts(tmp_path: Path, fmt: RowFormat, expected: str) -> None:
    dest = tmp_path / "out"
    empty = pd.DataFrame({"id": pd.Series([], dtype="int64"), "v": pd.Series([], dtype="float64")})
    assert merge([empty, empty], fmt, dest) == 0
    assert dest.read_text() == expected


def test_only_empty_parts_in_parquet(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    empty = pd.DataFrame({"id": pd.Series([], dtype="int64")})
    assert merge([empty], "parquet", dest) == 0
    assert pq.read_schema(dest).names == ["id"] and pq.read_metadata(dest).num_rows == 0


@pytest.mark.parametrize("fmt", ["text", "csv", "parquet", "jsonl"])
def test_no_parts(tmp_path: Path, fmt: RowFormat) -> None:
    dest = tmp_path / "out"
    assert merge_parts([], fmt, dest) == 0
    assert dest.exists()


def test_unreadable_part(tmp_path: Path) -> None:
    with pytest.raises(RowFormatError, match="part 1: its part is not readable Parquet"):
        merge_parts(readers([encode_part([1], "csv"), b"garbage"]), "csv", tmp_path / "out.csv")


def test_unconvertible_dataframe() -> None:
    with pytest.raises(RowFormatError, match="cannot be written as parquet"):
        encode_part(pd.DataFrame({"mixed": [1, "a", object()]}), "parquet")


def test_merge_reads_one_part_at_a_time(tmp_path: Path) -> None:
    live: list[int] = []
    parts = [encode_part(frame(i * 10, 10), "parquet") for i in range(5)]

    def reader(index: int) -> Callable[[], bytes]:
        def read() -> bytes:
            live.append(index)
            return parts[index]

        return read

    rows = merge_parts((reader(i) for i in range(5)), "parquet", tmp_path / "out.parquet")
    assert rows == 50 and live == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("value", "expected"), [(pd.DataFrame(), True), ([1], False), ("df", False)])
def test_is_dataframe(value: object, expected: bool) -> None:
    assert is_dataframe(value) is expected


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ([1, 2], [3.0, None], [1, 2, 3, None]),
        ([0.5, 1.5], [3, 4], [0.5, 1.5, 3.0, 4.0]),
    ],
    ids=["float with gaps into int", "int into float"],
)
def test_numeric_drift_between_batches_is_cast(
    tmp_path: Path, first: list[Any], second: list[Any], expected: list[Any]
) -> None:
    dest = tmp_path / "out.parquet"
    merge([pd.DataFrame({"v": first}), pd.DataFrame({"v": second})], "parquet", dest)
    assert pq.read_table(dest).column("v").to_pylist() == expected


def test_lossy_cast_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RowFormatError, match="part 1 returned column 'v' as double"):
        merge([pd.DataFrame({"v": [1, 2]}), pd.DataFrame({"v": [3.5]})], "parquet", tmp_path / "out.parquet")


def test_parquet_parts_dictionary_encode_only_texts() -> None:
    """Numbers skip the writer's trial dictionary (several times a part's size in scratch)."""
    result = frame(0, 500).assign(kind=pd.Categorical(["a", "b"] * 250))
    data = encode_part(result, "parquet")
    meta = pq.read_metadata(io.BytesIO(data))
    encoded = {meta.schema.column(i).name: meta.row_group(0).column(i).encodings for i in range(meta.num_columns)}
    assert {name for name, kinds in encoded.items() if "RLE_DICTIONARY" in kinds} == {"label", "kind"}
    back = pq.read_table(io.BytesIO(data)).to_pandas()
    pd.testing.assert_frame_equal(back, result, check_dtype=False)
    assert back["kind"].dtype == "category"


def test_lean_worker_memory_keeps_a_chosen_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    chosen = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    lean_worker_memory(chosen)
    assert chosen == {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    monkeypatch.setattr(sys, "platform", "win32")
    untouched: dict[str, str] = {}
    lean_worker_memory(untouched)
    assert untouched == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the system pool is chosen on Linux only")
def test_lean_worker_memory_before_arrow_loads_picks_system_pool() -> None:
    code = (
        "import os; from common.parts.rows import lean_worker_memory; lean_worker_memory(os.environ); "
        "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    )
    env = {key: value for key, value in os.environ.items() if key != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "system"
