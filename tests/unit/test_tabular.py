"""Tabular planning and reading: size cuts, exactly-once rows, ranged reads, bad inputs."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import BadDataError, InputError, UsageError
from common.messages import InputBinding, Item
from common.settings import RunSettings
from common.storage.base import Storage
from common.storage.local import LocalStorage
from common.tables.parquet import group_memory, offset_widths
from common.tables.read import detect_format
from coordinator.plan.partitions import BatchPlan
from coordinator.plan.tables import plan_tabular
from tests.storage_helpers import CountingStorage
from worker.run.tables import read_batch, warm_reader

ROWS = 6000


def table(rows: int = ROWS, start: int = 0) -> pd.DataFrame:
    ids = np.arange(start, start + rows)
    return pd.DataFrame(
        {
            "id": ids,
            "score": ids * 0.5,
            "country": np.where(ids % 3 == 0, "us", "fr"),
            "state": np.where(ids % 2 == 0, "s0", "s1"),
            "note": [f"row, number {i}" for i in ids],
        }
    )


def write(frame: pd.DataFrame, path: Path, fmt: str, row_group: int = 250) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group)
    return path


def plan(storage: Storage, uri: Path, **settings: object) -> list[BatchPlan]:
    binding = InputBinding(name="rows", uri=str(uri), kind="tabular", mode="direct")
    return list(plan_tabular(storage, binding, RunSettings.model_validate(settings)))


def read_all(storage: Storage, plans: list[BatchPlan]) -> pd.DataFrame:
    return pd.concat([read_batch(storage, p.items, p.partition) for p in plans], ignore_index=True)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("dir/B.CSV", "csv"),
        ("x.parquet", "parquet"),
        ("x.pq", "parquet"),
        ("x.jsonl", "jsonl"),
        ("x.ndjson", "jsonl"),
        ("x.json", None),
        ("x.csv.gz", None),
        ("_SUCCESS", None),
        (".csv", None),
    ],
)
def test_detect_format(name: str, fmt: str | None) -> None:
    assert detect_format(name) == fmt


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("remote", [False, True], ids=["local", "ranged"])
@pytest.mark.parametrize("files", [1, 3])
def test_every_row_exactly_once(tmp_path: Path, fmt: str, remote: bool, files: int) -> None:
    per_file = ROWS // files
    for index in range(files):
        write(table(per_file, index * per_file), tmp_path / "in" / f"part-{index}.{fmt}", fmt)
    storage: Storage = CountingStorage() if remote else LocalStorage()
    plans = plan(storage, tmp_path / "in" if files > 1 else tmp_path / "in" / f"part-0.{fmt}", mini_batch_size="8KB")
    assert len(plans) >= 4 * files, "each file must be cut into several batches"
    assert all(len(p.items) == 1 and p.partition is None for p in plans)
    out = read_all(storage, plans)
    assert sorted(out["id"]) == list(range(ROWS))
    assert list(out.columns) == ["id", "score", "country", "state", "note"]
    expected = table(ROWS).set_index("id")
    got = out.set_index("id").sort_index()
    assert (got["note"] == expected["note"]).all() and (got["score"] == expected["score"]).all()
    if remote:
        assert isinstance(storage, CountingStorage) and storage.whole_reads == 0


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_line_ranges_tile_each_file(tmp_path: Path, fmt: str) -> None:
    path = write(table(), tmp_path / f"t.{fmt}", fmt)
    items = [p.items[0] for p in plan(LocalStorage(), path, mini_batch_size="4KB")]
    data = path.read_bytes()
    position = 0
    for item in items:
        assert item.fmt == fmt and item.offset == position and item.length
        assert item.name == path.name and item.size == len(data) and item.rows is None
        chunk = data[item.offset : item.offset + item.length]
        assert chunk.endswith(b"\n"), "a cut falls right after a line break"
        assert item.length <= 4096 + 200 or item is items[0], "about the requested size"
        position += item.length
    assert position == len(data)


def test_parquet_cuts_at_row_groups(tmp_path: Path) -> None:
    path = write(table(), tmp_path / "t.parquet", "parquet", row_group=250)
    meta = pq.read_metadata(path)
    offsets = offset_widths(meta)
    sizes = [group_memory(meta, meta.row_group(i), offsets) for i in range(meta.num_row_groups)]
    target = max(sizes) * 3
    plans = plan(LocalStorage(), path, mini_batch_size=f"{target}B")
    runs = [p.items[0].row_groups or [] for p in plans]
    assert [g for run in runs for g in run] == list(range(meta.num_row_groups))
    for run in runs:
        assert sum(sizes[g] for g in run) <= target, "a batch stays under the size"
    for run, after in itertools.pairwise(runs):
        assert sum(sizes[g] for g in run) + sizes[after[0]] > target, "and is as full as it can be"
    assert sum(p.items[0].rows or 0 for p in plans) == ROWS


@pytest.mark.parametrize("dictionary", [True, False])
def test_parquet_sizes_are_decoded_sizes(tmp_path: Path, dictionary: bool) -> None:
    """Numbers by width, texts by their bytes even when only a dictionary is stored."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.standard_normal(5000), "n": np.arange(5000, dtype=np.int32)})
    frame["tag"] = np.array([f"segment-{n:04d}" for n in range(50)])[rng.integers(0, 50, 5000)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, use_dictionary=dictionary)
    meta = pq.read_metadata(path)
    decoded = pq.ParquetFile(path).read_row_group(0).nbytes
    assert abs(group_memory(meta, meta.row_group(0), offset_widths(meta)) - decoded) < 0.05 * decoded


def test_parquet_batch_is_its_size_in_memory(tmp_path: Path) -> None:
    path = write(table(20000), tmp_path / "t.parquet", "parquet", row_group=500)
    plans = plan(LocalStorage(), path, mini_batch_size="64KB")
    sizes = [read_batch(LocalStorage(), p.items, None).memory_usage(index=False).sum() for p in plans[:-1]]
    assert 0.7 * 64 * 1024 < min(sizes) and max(sizes) < 1.1 * 64 * 1024


def test_parquet_reads_match_pyarrow(tmp_path: Path) -> None:
    """Column-by-column decoding gives what one whole read gives: values, dtypes, pandas index."""
    frame = table(3000).set_index("id")
    frame["when"] = pd.date_range("2026-01-01", periods=3000, freq="min", tz="UTC")
    frame["kind"] = pd.Categorical(np.where(frame["score"] > 500, "high", "low"))
    frame["maybe"] = np.where(frame["score"] > 700, np.nan, frame["score"])
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pandas(frame), path, row_group_size=700)
    plans = plan(LocalStorage(), path, mini_batch_size="40KB")
    assert len(plans) > 1
    got = read_all(LocalStorage(), plans)
    expected = pq.read_table(path).to_pandas().reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)


def test_row_group_larger_than_batch_is_its_own_batch(tmp_path: Path) -> None:
    path = write(table(), tmp_path / "t.parquet", "parquet", row_group=2000)
    plans = plan(LocalStorage(), path, mini_batch_size="1KB")
    assert [p.items[0].row_groups for p in plans] == [[0], [1], [2]]


def test_csv_header_prepended_to_later_ranges(tmp_path: Path) -> None:
    path = write(table(), tmp_path / "t.csv", "csv")
    storage = CountingStorage()
    plans = plan(storage, path, mini_batch_size="4KB")
    last = read_batch(storage, plans[-1].items, None)
    assert list(last.columns) == ["id", "score", "country", "state", "note"]
    assert last["id"].dtype == np.int64 and last["id"].iloc[-1] == ROWS - 1
    assert not (last["note"] == "note").any()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_worker_reads_only_its_range(tmp_path: Path, fmt: str) -> None:
    path = write(table(20000), tmp_path / f"t.{fmt}", fmt, row_group=1000)
    size = path.stat().st_size
    storage = CountingStorage()
    plans = plan(storage, path, mini_batch_size="16KB")
    assert len(plans) > 8
    middle = plans[len(plans) // 2]
    storage.ranges.clear()
    frame = read_batch(storage, middle.items, None)
    assert len(frame) > 0
    assert storage.whole_reads == 0
    assert storage.bytes_read() < size / 4, f"read {storage.bytes_read()} of {size} bytes"
    if fmt == "parquet":
        assert len(storage.ranges) <= 2, "footer tail plus one span of row groups"


def test_planning_reads_little(tmp_path: Path) -> None:
    path = write(table(20000), tmp_path / "t.csv", "csv")
    storage = CountingStorage()
    plans = plan(storage, path, mini_batch_size="64KB")
    assert len(plans) > 5
    assert storage.bytes_read() < path.stat().st_size / 8


def test_plans_are_deterministic(tmp_path: Path) -> None:
    for index in range(3):
        write(table(1000, index * 1000), tmp_path / "in" / f"{index}.parquet", "parquet")
    assert plan(LocalStorage(), tmp_path / "in", mini_batch_size="4KB") == plan(
        LocalStorage(), tmp_path / "in", mini_batch_size="4KB"
    )


def corrupt_pages(path: Path) -> None:
    meta = pq.read_metadata(path)
    start = meta.row_group(1).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("case", "damage"),
    [
        ("random bytes", lambda p: p.write_bytes(np.random.default_rng(1).bytes(4000))),
        ("truncated", truncate),
        ("corrupt pages", corrupt_pages),
    ],
)
@pytest.mark.parametrize("remote", [False, True], ids=["local", "ranged"])
def test_bad_parquet_fails_its_batch(tmp_path: Path, case: str, damage: object, remote: bool) -> None:
    path = write(table(2000), tmp_path / "in" / "bad.parquet", "parquet")
    write(table(100, 5000), tmp_path / "in" / "good.parquet", "parquet")
    assert callable(damage)
    damage(path)
    storage: Storage = CountingStorage() if remote else LocalStorage()
    plans = plan(storage, tmp_path / "in", mini_batch_size="1MB")
    bad = [p for p in plans if p.items[0].uri == str(path)]
    good = [p for p in plans if p.items[0].uri != str(path)]
    assert bad and len(read_all(storage, good)) == 100
    with pytest.raises(BadDataError) as caught:
        read_all(storage, bad)
    assert str(path) in caught.value.line() and "\n" not in caught.value.line()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (b"a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n", "line 3"),
        (b"a,b,c\n1,2,3,4\n4,5,6\n", "header"),
    ],
    ids=["extra field later", "extra field first row"],
)
def test_ragged_csv_fails_its_batch(tmp_path: Path, text: bytes, where: str) -> None:
    path = tmp_path / "ragged.csv"
    path.write_bytes(text)
    plans = plan(LocalStorage(), path)
    with pytest.raises(BadDataError) as caught:
        read_all(LocalStorage(), plans)
    assert str(path) in caught.value.line(), where


def test_ragged_csv_row_in_a_later_range(tmp_path: Path) -> None:
    frame = table(3000)
    path = write(frame, tmp_path / "t.csv", "csv")
    lines = path.read_bytes().split(b"\n")
    lines[2500] += b",extra"
    path.write_bytes(b"\n".join(lines))
    plans = plan(LocalStorage(), path, mini_batch_size="8KB")
    outcomes = []
    for p in plans:
        try:
            outcomes.append(len(read_batch(LocalStorage(), p.items, None)))
        except BadDataError:
            outcomes.append(-1)
    assert outcomes.count(-1) == 1 and outcomes[0] > 0, "only the range holding the bad row fails"


def test_quoted_newlines_detected_when_split(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": range(400), "text": [f"line one\nline two {i}" for i in range(400)]})
    path = tmp_path / "multi.csv"
    frame.to_csv(path, index=False)
    whole = read_all(LocalStorage(), plan(LocalStorage(), path, mini_batch_size="1MB"))
    assert whole["text"].tolist() == frame["text"].tolist()
    with pytest.raises(BadDataError, match="quoted CSV field spans a line break"):
        read_all(LocalStorage(), plan(LocalStorage(), path, mini_batch_size="1KB"))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a.csv", b"id,x\n1,2\n"), ("b.csv", b"id,y\n1,2\n")),
        (("a.parquet", pa.table({"id": [1], "x": [1]})), ("b.parquet", pa.table({"id": [1], "x": ["1"]}))),
        (("a.csv", b"id,x\n1,2\n"), ("b.parquet", pa.table({"id": [1]}))),
    ],
    ids=["csv columns", "parquet types", "csv vs parquet"],
)
def test_mixed_schemas_refused(tmp_path: Path, first: tuple[str, object], second: tuple[str, object]) -> None:
    for name, content in (first, second):
        target = tmp_path / "in" / name
        target.parent.mkdir(exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            assert isinstance(content, pa.Table)
            pq.write_table(content, target)
    with pytest.raises(UsageError) as caught:
        plan(LocalStorage(), tmp_path / "in")
    line = caught.value.line()
    assert first[0] in line and second[0] in line and "mixed schemas" in line


def test_same_columns_in_another_order_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(b"id,x\n1,2\n")
    (tmp_path / "in" / "b.csv").write_bytes(b"x,id\n3,4\n")
    out = read_all(LocalStorage(), plan(LocalStorage(), tmp_path / "in"))
    assert sorted(out["id"]) == [1, 4]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_bare_number_is_bytes_for_tables(tmp_path: Path, fmt: str) -> None:
    """Azure ML reads mini_batch_size "1024" as bytes for tabular data."""
    write(table(100), tmp_path / f"t.{fmt}", fmt)
    by_number = plan(LocalStorage(), tmp_path / f"t.{fmt}", mini_batch_size="1024")
    assert len(by_number) > 1
    assert by_number == plan(LocalStorage(), tmp_path / f"t.{fmt}", mini_batch_size="1kb")


@pytest.mark.parametrize(
    ("settings", "error", "words"),
    [
        ({"partition_keys": ["region"]}, UsageError, ["region", "columns: id, score, country, state, note"]),
        (
            {"partition_keys": ["region"], "partition_layout": "{country}/*"},
            UsageError,
            ["region", "country"],
        ),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_refused_before_start(
    tmp_path: Path, fmt: str, settings: dict[str, object], error: type[Exception], words: list[str]
) -> None:
    write(table(100), tmp_path / f"t.{fmt}", fmt)
    with pytest.raises(error) as caught:
        plan(LocalStorage(), tmp_path / f"t.{fmt}", **settings)
    assert isinstance(caught.value, UsageError)
    for word in words:
        assert word in caught.value.line()


def test_file_count_is_moot_with_partition_keys(tmp_path: Path) -> None:
    path = write(table(100), tmp_path / "t.csv", "csv")
    plans = plan(LocalStorage(), path, mini_batch_size=10, partition_keys=["country"])
    assert [p.partition for p in plans] == [{"country": "fr"}, {"country": "us"}]


def test_no_tabular_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="no CSV, Parquet or JSON Lines"):
        plan(LocalStorage(), tmp_path)


def test_empty_and_header_only_files_make_no_batches(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(b"")
    (tmp_path / "in" / "b.csv").write_bytes(b"id,x\n")
    (tmp_path / "in" / "c.csv").write_bytes(b"id,x\n1,2\n")
    plans = plan(LocalStorage(), tmp_path / "in")
    assert [p.items[0].name for p in plans] == ["c.csv"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("remote", [False, True], ids=["local", "ranged"])
@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["country"], [{"country": "fr"}, {"country": "us"}]),
        (
            ["country", "state"],
            [
                {"country": "fr", "state": "s0"},
                {"country": "fr", "state": "s1"},
                {"country": "us", "state": "s0"},
                {"country": "us", "state": "s1"},
            ],
        ),
    ],
)
def test_column_partitions(
    tmp_path: Path, fmt: str, remote: bool, keys: list[str], expected: list[dict[str, str]]
) -> None:
    for index in range(2):
        write(table(1500, index * 1500), tmp_path / "in" / f"{index}.{fmt}", fmt)
    storage: Storage = CountingStorage() if remote else LocalStorage()
    plans = plan(storage, tmp_path / "in", partition_keys=keys, mini_batch_size="8KB")
    assert [p.partition for p in plans] == expected, "one batch per combination, sorted, keys win"
    seen: list[int] = []
    for p in plans:
        frame = read_batch(storage, p.items, p.partition)
        assert p.partition is not None
        for key, value in p.partition.items():
            assert (frame[key].astype(str) == value).all()
        seen.extend(frame["id"])
    assert sorted(seen) == list(range(3000))


def test_numeric_column_partition(tmp_path: Path) -> None:
    frame = pd.DataFrame({"year": [2020, 2021, 2020, None], "v": [1, 2, 3, 4]})
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    plans = plan(LocalStorage(), path, partition_keys=["year"])
    assert [p.partition for p in plans] == [{"year": ""}, {"year": "2020"}, {"year": "2021"}]
    assert read_batch(LocalStorage(), plans[1].items, plans[1].partition)["v"].tolist() == [1, 3]
    assert read_batch(LocalStorage(), plans[0].items, plans[0].partition)["v"].tolist() == [4]


@pytest.mark.parametrize("layout", [None, "country={country}/*"])
def test_folder_partitions_of_tables(tmp_path: Path, layout: str | None) -> None:
    for country, start in (("fr", 0), ("us", 100), ("de", 200)):
        write(
            table(100, start).drop(columns=["country"]),
            tmp_path / f"country={country}" / "p.parquet",
            "parquet",
        )
    settings: dict[str, object] = {"partition_keys": ["country"]}
    if layout:
        settings["partition_layout"] = layout
    plans = plan(LocalStorage(), tmp_path, **settings)
    assert [p.partition for p in plans] == [{"country": c} for c in ("de", "fr", "us")]
    frame = read_batch(LocalStorage(), plans[1].items, plans[1].partition)
    assert len(frame) == 100 and set(frame["country"]) == {"fr"}


def test_jsonl_bad_line_fails_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n{not json\n")
    with pytest.raises(BadDataError, match="bad JSON Lines"):
        read_all(LocalStorage(), plan(LocalStorage(), path))


def test_item_without_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadDataError, match="not a tabular item"):
        read_batch(LocalStorage(), [Item(uri=str(tmp_path / "x"), name="x")], None)


def test_parquet_footer_read_through_ranges(tmp_path: Path) -> None:
    path = write(table(20000), tmp_path / "t.parquet", "parquet", row_group=500)
    storage = CountingStorage()
    plans = plan(storage, path, mini_batch_size="64KB")
    assert len(plans) > 3
    assert len(storage.ranges) == 1, "one tail read gives the whole footer"
    buffer = io.BytesIO(path.read_bytes())
    assert sum(p.items[0].rows or 0 for p in plans) == pq.read_metadata(buffer).num_rows


def test_warm_reader_reads_and_leaves_nothing_behind(tmp_path: Path) -> None:
    warm_reader(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_warm_reader_fails_loudly_where_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        warm_reader(tmp_path / "missing")
