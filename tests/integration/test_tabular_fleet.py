"""Tabular and partitioned inputs in fleet mode: two worker services, RabbitMQ, data and output on S3."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fleet_helpers import fleet_env, nodes_in_report, run_cli, workers

pytestmark = pytest.mark.integration

COMPONENT = """\
$schema: https://componentsdk.azureedge.net/jsonschema/ParallelComponent.json
name: fleet.tabular
version: 0.0.1
type: ParallelComponent
inputs:
  data: {type: path}
outputs:
  out: {type: path}
parallel:
  input_data: inputs.data
  output_data: outputs.out
  entry: entry.py
"""

TABLE_ENTRY = """\
import pandas as pd

def run(mini_batch, mini_batch_context):
    if not isinstance(mini_batch, pd.DataFrame):
        raise TypeError(f"expected a DataFrame, got {type(mini_batch).__name__}")
    return mini_batch.assign(batch=mini_batch_context.minibatch_index)
"""

FILES_ENTRY = """\
import os

def run(mini_batch, mini_batch_context):
    key = ",".join(f"{k}={v}" for k, v in sorted(mini_batch_context.partition_key_value.items()))
    return [f"{key} {len(mini_batch)} {os.path.basename(p)}" for p in mini_batch]
"""

SEED = [
    "country1/state1/file1.txt", "country1/state1/file2.txt", "country1/state2/file1.txt",
    "country1/state2/file2.txt", "country1/state3/file1.txt", "country1/state4/file1.txt",
    "country2/state1/file1.txt", "country2/state2/file1.txt", "country2/state3/file1.txt",
    "country2/state3/file2.txt",
]  # fmt: skip


def make_code(root: Path, entry: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "component.yaml").write_text(COMPONENT)
    (root / "entry.py").write_text(entry)
    return root / "component.yaml"


def frame(rows: int, start: int = 0) -> pd.DataFrame:
    ids = np.arange(start, start + rows, dtype="int64")
    return pd.DataFrame({"id": ids, "x": np.sqrt(ids.astype("float64")), "name": [f"n{i}" for i in ids]})


def parquet_bytes(data: pd.DataFrame, row_group_rows: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False), sink, row_group_size=row_group_rows)
    return sink.getvalue()


def submit(spec: Path, url: str, bucket: str, data: str, env: dict[str, str], *flags: str) -> Any:
    return run_cli(
        "run", spec, "--broker", url, "--store", f"{bucket}/store", "--input", f"data={data}",
        "--output", f"out={bucket}/out", "--no-progress", *flags, env=env,
    )  # fmt: skip


def test_parquet_and_csv_on_s3_split_across_two_workers(tmp_path: Path, rabbitmq, s3) -> None:
    bucket = s3.make_bucket()
    client, name = s3.client(), bucket.removeprefix("s3://")
    expected = frame(6000)
    client.put_object(Bucket=name, Key="in/a.parquet", Body=parquet_bytes(expected.iloc[:4000], 250))
    client.put_object(Bucket=name, Key="in/b.csv", Body=expected.iloc[4000:].to_csv(index=False).encode())
    spec = make_code(tmp_path / "code", TABLE_ENTRY)
    env = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-a", "node-b"]):
        result = submit(spec, rabbitmq.url, bucket, f"{bucket}/in:tabular", env,
                        "--mini_batch_size", "8KB", "--set", "append_row_format=parquet")  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    body = client.get_object(Bucket=name, Key="out/parallel_run_step.parquet")["Body"].read()
    merged = pd.read_parquet(io.BytesIO(body))
    pd.testing.assert_frame_equal(merged.drop(columns="batch"), expected)  # every row once, in order
    assert merged["batch"].is_monotonic_increasing and merged["batch"].nunique() >= 10
    report = client.get_object(Bucket=name, Key="out/logs/sys/job_report/processed_mini-batches.csv")
    counts = nodes_in_report(report["Body"].read().decode())
    assert set(counts) == {"node-a", "node-b"}, counts


def test_hive_partitions_on_s3(tmp_path: Path, rabbitmq, s3) -> None:
    bucket = s3.make_bucket()
    client, name = s3.client(), bucket.removeprefix("s3://")
    for rel in SEED:
        country, state, file = rel.split("/")
        client.put_object(Bucket=name, Key=f"in/country={country}/state={state}/{file}", Body=rel.encode())
    spec = make_code(tmp_path / "code", FILES_ENTRY)
    env = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-a", "node-b"]):
        result = submit(spec, rabbitmq.url, bucket, f"{bucket}/in", env, "--set", "partition_keys=[country,state]")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "7/7 mini-batches committed, 0 failed; 10 items succeeded, 0 failed" in result.stdout
    lines = client.get_object(Bucket=name, Key="out/parallel_run_step.txt")["Body"].read().decode().splitlines()
    assert len(lines) == 10
    assert lines[0] == "country=country1,state=state1 2 file1.txt"
    assert lines[-1] == "country=country2,state=state3 2 file2.txt"


def test_corrupt_parquet_on_s3_fails_with_one_line(tmp_path: Path, rabbitmq, s3) -> None:
    bucket = s3.make_bucket()
    client, name = s3.client(), bucket.removeprefix("s3://")
    client.put_object(Bucket=name, Key="in/a.parquet", Body=parquet_bytes(frame(500), 100))
    client.put_object(Bucket=name, Key="in/b_bad.parquet", Body=b"not a parquet file at all\n" * 40)
    spec = make_code(tmp_path / "code", TABLE_ENTRY)
    env = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-a"]):
        result = submit(spec, rabbitmq.url, bucket, f"{bucket}/in:tabular", env, "--error_threshold", "0")
    assert result.returncode == 1, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("batchfleet: error:")]
    assert len(errors) == 1 and "b_bad.parquet" in errors[0], result.stderr
