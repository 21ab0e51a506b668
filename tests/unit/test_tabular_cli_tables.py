"""Tabular inputs through `batchfleet run`: splitting, append_row formats, bad tables, score_tabular example."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.cli_helpers import batchfleet
from tests.unit.tabular_cli_helpers import (
    EXAMPLES,
    assert_ok,
    assert_one_line,
    component,
    merged,
    prepare,
    run_job,
    source_frame,
    summary,
    write_parquet,
)

# Refuses anything but a DataFrame, so a test passes only if run() really got one.
IDENTITY = """\
import pandas as pd

def run(mini_batch):
    if not isinstance(mini_batch, pd.DataFrame):
        raise TypeError(f"expected a DataFrame, got {type(mini_batch).__name__}")
    return mini_batch
"""

SCORES = """\
import pandas as pd

def run(mini_batch):
    return pd.DataFrame({
        "id": mini_batch["id"],
        "score": mini_batch["x"] * 1e-12,
        "label": "row" + mini_batch["id"].astype(str),
        "ok": mini_batch["id"] % 2 == 0,
    })
"""


def write_jsonl(frame: pd.DataFrame, path: Path) -> Path:
    # json.dumps keeps every float digit, unlike DataFrame.to_json's default precision.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in frame.to_dict(orient="records"):
            handle.write(json.dumps({k: v.item() if hasattr(v, "item") else v for k, v in record.items()}) + "\n")
    return path


def batch_report(tmp_path: Path) -> list[dict[str, str]]:
    report = tmp_path / "out" / "logs" / "sys" / "job_report" / "processed_mini-batches.csv"
    with report.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --- splitting: every row exactly once, in order ---------------------------------------------------


def test_parquet_split_into_many_batches(tmp_path: Path) -> None:
    frame = source_frame()
    data = write_parquet(frame, tmp_path / "data" / "table.parquet")
    groups = pq.ParquetFile(data).num_row_groups
    result = run_job(tmp_path, IDENTITY, f"{data}:tabular", "--mini_batch_size", "4KB",
                     "--set", "append_row_format=parquet")  # fmt: skip
    committed, total, succeeded, failed = assert_ok(result)
    assert total == committed >= 10  # one 3000-row file cut at row groups
    assert total <= groups
    assert (succeeded, failed) == (len(frame), 0)
    pd.testing.assert_frame_equal(pd.read_parquet(merged(tmp_path)), frame)


def test_parquet_folder_of_files_in_order(tmp_path: Path) -> None:
    frame = source_frame(2400)
    for index in range(3):
        write_parquet(frame.iloc[index * 800 : (index + 1) * 800], tmp_path / "data" / f"part{index}.parquet")
    result = run_job(tmp_path, IDENTITY, f"{tmp_path / 'data'}:tabular", "--mini_batch_size", "8KB",
                     "--set", "append_row_format=parquet")  # fmt: skip
    committed, total, succeeded, _ = assert_ok(result)
    assert total == committed >= 6 and succeeded == len(frame)
    pd.testing.assert_frame_equal(pd.read_parquet(merged(tmp_path)), frame)


def test_csv_input_split_at_lines(tmp_path: Path) -> None:
    frame = source_frame()
    data = tmp_path / "data" / "table.csv"
    data.parent.mkdir(parents=True)
    frame.to_csv(data, index=False)
    result = run_job(tmp_path, IDENTITY, f"{data}:tabular", "--mini_batch_size", "4KB",
                     "--set", "append_row_format=parquet")  # fmt: skip
    committed, total, succeeded, _ = assert_ok(result)
    assert total == committed >= data.stat().st_size // (4 * 1024)
    assert succeeded == len(frame)
    pd.testing.assert_frame_equal(pd.read_parquet(merged(tmp_path)), frame)


def test_jsonl_input_split_at_lines(tmp_path: Path) -> None:
    frame = source_frame()
    data = write_jsonl(frame, tmp_path / "data" / "table.jsonl")
    result = run_job(tmp_path, IDENTITY, f"{data}:tabular", "--mini_batch_size", "4KB",
                     "--set", "append_row_format=parquet")  # fmt: skip
    committed, total, succeeded, _ = assert_ok(result)
    assert total == committed >= data.stat().st_size // (4 * 1024)
    assert succeeded == len(frame)
    pd.testing.assert_frame_equal(pd.read_parquet(merged(tmp_path)), frame)


def test_table_port_type_makes_an_input_tabular(tmp_path: Path) -> None:
    frame = source_frame(500)
    data = write_parquet(frame, tmp_path / "data" / "table.parquet")
    result = run_job(tmp_path, IDENTITY, data, "--set", "append_row_format=parquet", input_type="mltable")
    _, total, succeeded, _ = assert_ok(result)
    assert total == 1 and succeeded == 500  # the default 1MB holds the whole table
    pd.testing.assert_frame_equal(pd.read_parquet(merged(tmp_path)), frame)


def test_user_modules_named_like_ours_with_a_table(tmp_path: Path) -> None:
    # A user folder with its own common.py must not shadow the table reader in the worker.
    frame = source_frame(600)
    data = write_parquet(frame, tmp_path / "data" / "table.parquet")
    entry = "import common\n\n" + IDENTITY.replace("return mini_batch", "return mini_batch.assign(tag=common.TAG)")
    spec = component(tmp_path / "code", entry)
    (tmp_path / "code" / "common.py").write_text("TAG = 'users-own-common'\n")
    result = batchfleet(
        "run", spec, "--input", f"data={data}:tabular", "--output", f"scored={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress", "--mini_batch_size", "4KB",
        "--set", "append_row_format=parquet",
    )  # fmt: skip
    _, total, succeeded, _ = assert_ok(result)
    assert total >= 2 and succeeded == 600
    out = pd.read_parquet(merged(tmp_path))
    assert (out["tag"] == "users-own-common").all() and list(out["id"]) == list(frame["id"])


# --- append_row formats -----------------------------------------------------------------------------


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A Parquet input cut into several batches, and the rows SCORES returns for it."""
    frame = source_frame(1200)
    data = write_parquet(frame, tmp_path / "data" / "table.parquet")
    expected = pd.DataFrame(
        {
            "id": frame["id"],
            "score": frame["x"] * 1e-12,
            "label": "row" + frame["id"].astype(str),
            "ok": frame["id"] % 2 == 0,
        }
    )
    return data, expected


def run_format(tmp_path: Path, data: Path, fmt: str) -> Path:
    result = run_job(tmp_path, SCORES, f"{data}:tabular", "--mini_batch_size", "4KB",
                     "--set", f"append_row_format={fmt}")  # fmt: skip
    _, total, succeeded, _ = assert_ok(result)
    assert total >= 4 and succeeded == 1200
    return merged(tmp_path)


def test_append_row_text_is_azure_ml_style(tmp_path: Path, scored: tuple[Path, pd.DataFrame]) -> None:
    data, expected = scored
    lines = run_format(tmp_path, data, "text").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(expected)  # no header
    for line, row in zip(lines[:50], expected.itertuples(index=False), strict=False):
        fields = line.split(" ")
        assert fields[0] == str(row.id) and fields[2] == row.label and fields[3] == str(row.ok)
        assert float(fields[1]) == pytest.approx(row.score, rel=1e-12)
    assert [int(line.split(" ", 1)[0]) for line in lines] == list(expected["id"])


def test_append_row_csv_has_one_header(tmp_path: Path, scored: tuple[Path, pd.DataFrame]) -> None:
    data, expected = scored
    path = run_format(tmp_path, data, "csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,score,label,ok"
    assert sum(1 for line in lines if line == lines[0]) == 1
    pd.testing.assert_frame_equal(pd.read_csv(path), expected)


def test_append_row_parquet_keeps_the_schema(tmp_path: Path, scored: tuple[Path, pd.DataFrame]) -> None:
    data, expected = scored
    path = run_format(tmp_path, data, "parquet")
    schema = pq.read_schema(path)
    # pandas 3 stores text as large_string; either width is the same column type to a reader.
    types = {name: str(schema.field(name).type).replace("large_string", "string") for name in schema.names}
    assert types == {"id": "int64", "score": "double", "label": "string", "ok": "bool"}
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected)


def test_append_row_jsonl_keeps_values(tmp_path: Path, scored: tuple[Path, pd.DataFrame]) -> None:
    data, expected = scored
    path = run_format(tmp_path, data, "jsonl")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == list(expected["id"])
    assert [r["label"] for r in records] == list(expected["label"])
    assert [r["ok"] for r in records] == list(expected["ok"])
    # Scores are about 1e-12: a writer that rounds to a fixed number of decimals loses them all.
    np.testing.assert_allclose([r["score"] for r in records], expected["score"], rtol=1e-9, atol=0)


# --- the score_tabular example, with its README command -------------------------------------------


@pytest.fixture(scope="module")
def tabular_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("score_tabular")
    prepare("score_tabular", out)
    return out


@pytest.mark.parametrize(("table", "fmt", "name", "batches"), [
    ("parquet", "csv", "scores.csv", 9), ("csv", "parquet", "scores.parquet", 8)])  # fmt: skip
def test_example_score_tabular(tmp_path: Path, tabular_data: Path, table: str, fmt: str, name: str,
                               batches: int) -> None:  # fmt: skip
    result = batchfleet(
        "run", EXAMPLES / "score_tabular" / "component.yaml",
        "--input", f"rows_to_score={tabular_data / table}",
        "--input", f"trained_model={tabular_data / 'model' / 'model.pkl'}",
        "--output", f"scored_rows={tmp_path / 'out'}", "--store", tmp_path / "store", "--no-progress",
        "--set", f"append_row_format={fmt}", "--set", f"append_row_file_name={name}",
    )  # fmt: skip
    committed, total, succeeded, failed = assert_ok(result)
    assert (committed, total, succeeded, failed) == (batches, batches, 569, 0)
    path = merged(tmp_path, name)
    out = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    assert list(out.columns) == ["id", "prediction", "probability"]
    assert list(out["id"]) == list(range(569))
    truth = pd.read_csv(tabular_data / "csv" / "breast_cancer.csv")["target"]
    assert (out["prediction"] == truth).mean() >= 0.95
    assert out["probability"].between(0.5, 1.0).all()


# --- bad input: one clear line, no traceback -----------------------------------------------------------


def good_and_bad(tmp_path: Path, bad_name: str, bad: bytes) -> Path:
    folder = tmp_path / "data"
    write_parquet(source_frame(400), folder / "a_good.parquet")
    (folder / bad_name).write_bytes(bad)
    return folder


def truncated_parquet(tmp_path: Path) -> bytes:
    whole = write_parquet(source_frame(2000), tmp_path / "whole" / "t.parquet").read_bytes()
    return whole[: len(whole) * 2 // 3]


@pytest.mark.parametrize("case", ["corrupt", "truncated"])
def test_unreadable_parquet_fails_its_items(tmp_path: Path, case: str) -> None:
    bad = b"this is not a parquet file\n" * 50 if case == "corrupt" else truncated_parquet(tmp_path)
    data = good_and_bad(tmp_path, "b_bad.parquet", bad)
    result = run_job(tmp_path, IDENTITY, f"{data}:tabular", "--error_threshold", "0")
    assert_one_line(result, 1, "b_bad.parquet")
    _, _, succeeded, failed = summary(result)
    assert succeeded == 400 and failed >= 1
    rows = {row["batch_id"]: row for row in batch_report(tmp_path)}
    assert int(rows["1"]["failed"]) >= 1 and "b_bad.parquet" in rows["1"]["error"]


def test_unreadable_parquet_is_counted_when_tolerated(tmp_path: Path) -> None:
    data = good_and_bad(tmp_path, "b_bad.parquet", b"PAR1 not really")
    result = run_job(tmp_path, IDENTITY, f"{data}:tabular", "--set", "append_row_format=parquet")
    _, total, succeeded, failed = assert_ok(result)
    assert (total, succeeded) == (2, 400) and failed >= 1
    assert len(pd.read_parquet(merged(tmp_path))) == 400


def test_ragged_csv_fails_its_items(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    lines = ["id,x,name"] + [f"{i},{i / 10},n{i}" for i in range(300)]
    lines[200] += ",extra"
    (folder / "ragged.csv").write_text("\n".join(lines) + "\n")
    result = run_job(tmp_path, IDENTITY, f"{folder}:tabular", "--mini_batch_size", "1KB",
                     "--error_threshold", "0")  # fmt: skip
    assert_one_line(result, 1, "ragged.csv")
    _, _, _, failed = summary(result)
    assert failed >= 1
    errors = [row for row in batch_report(tmp_path) if row["error"]]
    assert errors and all("ragged.csv" in row["error"] for row in errors)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_crashing_run_fails_items(tmp_path: Path, fmt: str) -> None:
    # A crash leaves no row count from the child; the batch's items must still count as failed.
    frame = source_frame(1000)
    data = tmp_path / "data" / f"t.{fmt}"
    if fmt == "parquet":
        write_parquet(frame, data)
    else:
        data.parent.mkdir(parents=True)
        frame.to_csv(data, index=False)
    crash = "import os\n\ndef run(mini_batch):\n    os._exit(3)\n"
    result = run_job(tmp_path, crash, f"{data}:tabular", "--mini_batch_size", "8KB", "--error_threshold", "0",
                     "--run_max_try", "1")  # fmt: skip
    assert_one_line(result, 1)
    committed, _, succeeded, failed = summary(result)
    assert committed == 0 and succeeded == 0 and failed >= 1


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_mixed_schemas_refused_before_start(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    one, two = source_frame(50), source_frame(50).rename(columns={"name": "title"})
    if fmt == "parquet":
        write_parquet(one, folder / "a.parquet")
        write_parquet(two, folder / "b.parquet")
    else:
        one.to_csv(folder / "a.csv", index=False)
        two.to_csv(folder / "b.csv", index=False)
    result = run_job(tmp_path, IDENTITY, f"{folder}:tabular")
    assert_one_line(result, 2, "mixed schemas", f"b.{fmt}")
    assert not (tmp_path / "out" / "parallel_run_step.txt").exists()


def test_bare_number_batch_size_on_a_table_is_bytes(tmp_path: Path) -> None:
    """Azure ML reads a bare mini_batch_size as bytes for tables: one row group (100 rows) a batch."""
    data = write_parquet(source_frame(1000), tmp_path / "data" / "t.parquet")
    result = run_job(tmp_path, IDENTITY, f"{data}:tabular", "--mini_batch_size", "10")
    committed, total, succeeded, _ = assert_ok(result)
    assert committed == total == 10 and succeeded == 1000
