"""Fleet mode with the real servers: coordinator and two workers as separate processes, data on S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fleet_helpers import COMPONENT, FILE_ENTRY, fleet_env, nodes_in_report, run_cli, workers

pytestmark = pytest.mark.integration


def make_code(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "component.yaml").write_text(COMPONENT)
    (root / "entry.py").write_text(FILE_ENTRY)
    return root / "component.yaml"


def test_two_workers_on_s3(tmp_path: Path, rabbitmq, s3) -> None:
    bucket = s3.make_bucket()
    client = s3.client()
    name = bucket.removeprefix("s3://")
    for i in range(60):
        client.put_object(Bucket=name, Key=f"in/part{i // 20}/item{i:03d}.txt", Body=f"value-{i}".encode())
    spec = make_code(tmp_path / "code")
    env = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-a", "node-b"]):
        result = run_cli(
            "run",
            spec,
            "--broker",
            rabbitmq.url,
            "--store",
            f"{bucket}/store",
            "--input",
            f"data={bucket}/in",
            "--output",
            f"out={bucket}/out",
            "--mini_batch_size",
            "3",
            "--no-progress",
            env=env,
        )
    assert result.returncode == 0, result.stderr + result.stdout
    merged = client.get_object(Bucket=name, Key="out/parallel_run_step.txt")["Body"].read().decode()
    expected = [f"item{i:03d}.txt value-{i}" for i in range(60)]
    assert merged.splitlines() == expected
    report = client.get_object(Bucket=name, Key="out/logs/sys/job_report/processed_mini-batches.csv")
    counts = nodes_in_report(report["Body"].read().decode())
    assert set(counts) == {"node-a", "node-b"}, counts
    assert sum(counts.values()) == 20
    listed = client.list_objects_v2(Bucket=name, Prefix="out/")["Contents"]
    done = {obj["Key"].rsplit("/", 1)[1] for obj in listed if obj["Key"].endswith(".done")}
    assert done == {f"item{i:03d}.txt.done" for i in range(60)}
    keys = {obj["Key"] for obj in listed}
    assert any(k.startswith("out/logs/user/stdout/node-a/") for k in keys)
    assert any(k.startswith("out/logs/user/stdout/node-b/") for k in keys)
    assert "out/logs/report.html" in keys


DIRECT_ENTRY = """\
def run(mini_batch):
    return [f"{item}" for item in mini_batch]
"""


def test_direct_mode_passes_uris_without_downloading(tmp_path: Path, rabbitmq, s3) -> None:
    bucket = s3.make_bucket()
    name = bucket.removeprefix("s3://")
    client = s3.client()
    for i in range(6):
        client.put_object(Bucket=name, Key=f"in/item{i}.txt", Body=b"x")
    root = tmp_path / "code"
    root.mkdir()
    (root / "component.yaml").write_text(COMPONENT)
    (root / "entry.py").write_text(DIRECT_ENTRY)
    env = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=str(tmp_path / "store"))
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-d"]):
        result = run_cli(
            "run", root / "component.yaml", "--broker", rabbitmq.url, "--store", tmp_path / "store",
            "--input", f"data={bucket}/in:direct", "--output", f"out={tmp_path / 'out'}", "--no-progress", env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert rows == [f"{bucket}/in/item{i}.txt" for i in range(6)]
    assert not list((tmp_path / "workers" / "work-node-d").glob("*/batches/*/item*.txt"))
