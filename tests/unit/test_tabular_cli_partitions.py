"""Partitioned inputs through `batchfleet run`: folder and column partitions, bad keys, partitioned example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cli_helpers import batchfleet
from tests.unit.tabular_cli_helpers import EXAMPLES, assert_ok, assert_one_line, merged, prepare, run_job, write_parquet

CONTEXT_ROWS = """\
import pandas as pd

def run(mini_batch, mini_batch_context):
    return pd.DataFrame({
        "id": mini_batch["id"],
        "region": mini_batch["region"].astype(str),
        "kind": mini_batch["kind"].astype(str),
        "batch": mini_batch_context.minibatch_index,
        "key": "|".join(f"{k}={v}" for k, v in sorted(mini_batch_context.partition_key_value.items())),
    })
"""

CONTEXT_FILES = """\
import json, os

def run(mini_batch, mini_batch_context):
    key = json.dumps(mini_batch_context.partition_key_value, sort_keys=True)
    return [f"{mini_batch_context.minibatch_index}|{key}|{len(mini_batch)}|{os.path.basename(p)}"
            for p in mini_batch]
"""

# The seed's partitioned layout (ParallelComponent.txt).
SEED = [
    "country1/state1/file1.txt", "country1/state1/file2.txt", "country1/state2/file1.txt",
    "country1/state2/file2.txt", "country1/state3/file1.txt", "country1/state4/file1.txt",
    "country2/state1/file1.txt", "country2/state2/file1.txt", "country2/state3/file1.txt",
    "country2/state3/file2.txt",
]  # fmt: skip


# --- partitions -------------------------------------------------------------------------------------


def seed_files(root: Path, hive: bool = False) -> Path:
    for rel in SEED:
        country, state, name = rel.split("/")
        folder = root / (f"country={country}/state={state}" if hive else f"{country}/{state}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"{rel}\n")
    return root


def partition_lines(tmp_path: Path) -> list[tuple[int, dict[str, str], int, str]]:
    found = []
    for line in merged(tmp_path).read_text(encoding="utf-8").splitlines():
        index, key, count, name = line.split("|")
        found.append((int(index), json.loads(key), int(count), name))
    return found


@pytest.mark.parametrize(
    ("keys", "batches", "sizes"),
    [("[country]", 2, [6, 4]), ("[country,state]", 7, [2, 2, 1, 1, 1, 1, 2])],
    ids=["country", "country-state"],
)
def test_seed_layout_partitions(tmp_path: Path, keys: str, batches: int, sizes: list[int]) -> None:
    data = seed_files(tmp_path / "data")
    result = run_job(tmp_path, CONTEXT_FILES, data, "--set", f"partition_keys={keys}",
                     "--partition_layout", "{country}/{state}/*", "--mini_batch_size", "1")  # fmt: skip
    committed, total, succeeded, failed = assert_ok(result)
    assert (committed, total, succeeded, failed) == (batches, batches, 10, 0)
    lines = partition_lines(tmp_path)
    assert len(lines) == 10
    by_batch: dict[int, tuple[dict[str, str], int]] = {}
    for index, key, count, _ in lines:
        assert by_batch.setdefault(index, (key, count)) == (key, count)
    assert sorted(by_batch) == list(range(batches))
    assert [by_batch[i][1] for i in range(batches)] == sizes
    wanted = keys.strip("[]").split(",")
    assert all(list(key) == wanted for key, _ in by_batch.values())
    assert by_batch[0][0]["country"] == "country1" and by_batch[batches - 1][0]["country"] == "country2"


def test_partition_layout_given_with_set(tmp_path: Path) -> None:
    # The quoted layout as a shell passes it on: --set partition_layout='{country}/{state}/*'.
    data = seed_files(tmp_path / "data")
    result = run_job(tmp_path, CONTEXT_FILES, data, "--set", "partition_keys=[country,state]",
                     "--set", "partition_layout={country}/{state}/*")  # fmt: skip
    _, total, succeeded, _ = assert_ok(result)
    assert (total, succeeded) == (7, 10)


def test_hive_style_partitions(tmp_path: Path) -> None:
    data = seed_files(tmp_path / "data", hive=True)
    result = run_job(tmp_path, CONTEXT_FILES, data, "--set", "partition_keys=[country,state]")
    _, total, succeeded, _ = assert_ok(result)
    assert (total, succeeded) == (7, 10)
    keys = {json.dumps(key, sort_keys=True) for _, key, _, _ in partition_lines(tmp_path)}
    assert json.dumps({"country": "country2", "state": "state3"}, sort_keys=True) in keys
    assert len(keys) == 7


def region_table(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    rows = 1500
    frame = pd.DataFrame(
        {
            "id": np.arange(rows, dtype="int64"),
            "region": np.array(["north", "south", "east"])[np.arange(rows) % 3],
            "kind": np.array(["a", "b"])[(np.arange(rows) // 7) % 2],
            "x": np.linspace(0, 1, rows),
        }
    )
    return write_parquet(frame, tmp_path / "data" / "table.parquet", row_group_rows=200), frame


@pytest.mark.parametrize(("keys", "combos"), [(["region"], 3), (["region", "kind"], 6)], ids=["one", "two"])
def test_column_partitions_of_a_table(tmp_path: Path, keys: list[str], combos: int) -> None:
    data, frame = region_table(tmp_path)
    result = run_job(tmp_path, CONTEXT_ROWS, f"{data}:tabular", "--set", f"partition_keys=[{','.join(keys)}]",
                     "--set", "append_row_format=parquet", "--mini_batch_size", "2KB")  # fmt: skip
    committed, total, succeeded, failed = assert_ok(result)
    assert (committed, total, succeeded, failed) == (combos, combos, len(frame), 0)
    out = pd.read_parquet(merged(tmp_path))
    assert sorted(out["id"]) == list(frame["id"])  # every row exactly once
    own = out.apply(lambda row: "|".join(f"{k}={row[k]}" for k in sorted(keys)), axis=1)
    assert (own == out["key"]).all()  # each batch holds only its own partition's rows
    assert out.groupby("batch")["key"].nunique().eq(1).all()
    assert out["batch"].nunique() == combos


# --- the partitioned example, with its README command ---------------------------------------------


@pytest.fixture(scope="module")
def partitioned_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("partitioned")
    prepare("partitioned", out)
    return out


@pytest.mark.parametrize("layout", ["plain", "hive"])
def test_example_partitioned(tmp_path: Path, partitioned_data: Path, layout: str) -> None:
    flags = ["--set", "partition_layout={country}/{state}/*"] if layout == "plain" else []
    result = batchfleet(
        "run", EXAMPLES / "partitioned" / "component.yaml",
        "--input", f"readings={partitioned_data / layout}", "--output", f"counts={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress", "--set", "partition_keys=[country,state]", *flags,
    )  # fmt: skip
    committed, total, succeeded, failed = assert_ok(result)
    assert (committed, total, succeeded, failed) == (7, 7, 10, 0)
    lines = merged(tmp_path).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 10
    summaries = list(dict.fromkeys(line.rsplit(" ", 1)[0] for line in lines))
    assert len(summaries) == 7
    assert summaries[0].startswith("country=country1 state=state1 files=2 lines=")
    assert summaries[-1].startswith("country=country2 state=state3 files=2 lines=")


# --- bad partition keys: one clear line, no traceback ---------------------------------------------


def test_partition_key_not_in_layout(tmp_path: Path) -> None:
    data = seed_files(tmp_path / "data")
    result = run_job(tmp_path, CONTEXT_FILES, data, "--set", "partition_keys=[city]",
                     "--partition_layout", "{country}/{state}/*")  # fmt: skip
    assert_one_line(result, 2, "'city'", "partition_layout")


def test_partition_key_not_a_hive_folder(tmp_path: Path) -> None:
    data = seed_files(tmp_path / "data", hive=True)
    result = run_job(tmp_path, CONTEXT_FILES, data, "--set", "partition_keys=[city]")
    assert_one_line(result, 2, "'city'")


def test_partition_key_not_a_column(tmp_path: Path) -> None:
    data, _ = region_table(tmp_path)
    result = run_job(tmp_path, CONTEXT_ROWS, f"{data}:tabular", "--set", "partition_keys=[city]")
    assert_one_line(result, 2, "'city'", "column")
