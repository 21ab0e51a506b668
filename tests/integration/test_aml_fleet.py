"""Azure ML behaviours on a real fleet: a node whose init() fails is dropped and the job goes on."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import COMPONENT, fleet_env, run_cli, workers

pytestmark = pytest.mark.integration

# The good node waits for the bad node's third failed init (a marker line each), then runs the
# rest at 0.2 s a batch: the bad node's giving up reaches the coordinator before the job ends,
# however slowly a loaded machine spawns the bad node's children.
INIT_FAILS_ON_ONE_NODE = """\
import time
from pathlib import Path
from azureml_user.parallel_run import EntryScript

MARKER = Path({marker!r})

def init():
    if EntryScript().node_id == "node-bad":
        with MARKER.open("a") as out:
            out.write("failed\\n")
        raise OSError("no model on this node")

def failures():
    return len(MARKER.read_text().splitlines()) if MARKER.exists() else 0

def run(mini_batch):
    deadline = time.monotonic() + 60
    while failures() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    return [path.rsplit("/", 1)[-1] for path in mini_batch]
"""


def test_a_node_whose_init_fails_is_dropped(tmp_path: Path, rabbitmq: Any) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "component.yaml").write_text(COMPONENT)
    (code / "entry.py").write_text(INIT_FAILS_ON_ONE_NODE.format(marker=str(tmp_path / "init-failures.txt")))
    data = tmp_path / "data"
    data.mkdir()
    for i in range(12):
        (data / f"item{i:02d}.txt").write_text(str(i))
    env = fleet_env(BATCHFLEET_STORE=str(tmp_path / "store"))
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-bad", "node-good"], 1):
        result = run_cli(
            "run", code / "component.yaml", "--broker", rabbitmq.url, "--store", tmp_path / "store",
            "--input", f"data={data}", "--output", f"out={tmp_path / 'out'}", "--mini_batch_size", "1",
            "--no-progress", env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    rows = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert rows == [f"item{i:02d}.txt" for i in range(12)]
    logs = tmp_path / "out" / "logs"
    assert "Node node-bad left the job: init() failed on node node-bad 3 times" in (logs / "job_error.txt").read_text()
    assert "no model on this node" in (logs / "sys" / "error" / "node-bad" / "init.txt").read_text()


AML = Path(__file__).parents[1] / "fixtures" / "aml"


def test_pipeline_command_step_feeds_parallel_step_on_the_fleet(tmp_path: Path, rabbitmq: Any, s3: Any) -> None:
    """The command step runs next to the coordinator and uploads its output to the store on S3;
    the parallel step's mini-batches run on a worker that downloads them from there."""
    folder = tmp_path / "aml"
    shutil.copytree(AML, folder, ignore=shutil.ignore_patterns("__pycache__"))
    bucket = s3.make_bucket()
    env = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-p"], 2):
        result = run_cli(
            "run", folder / "pipeline_components.yml", "--broker", rabbitmq.url, "--store", f"{bucket}/store",
            "--output", f"scored={bucket}/out/scores.txt", "--no-progress", env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    client, name = s3.client(), bucket.removeprefix("s3://")
    rows = client.get_object(Bucket=name, Key="out/scores.txt")["Body"].read().decode().splitlines()
    assert rows == [f"n{i:02d}.sq.txt {i * i + 100}" for i in range(12)]
    keys = {obj["Key"] for obj in client.list_objects_v2(Bucket=name, Prefix="store/")["Contents"]}
    assert any(key.endswith("/prep/prep_data/n00.sq.txt") for key in keys), sorted(keys)[:20]
    assert any(key.endswith("/pipeline_summary.txt") for key in keys)
    assert any(key.startswith("out/logs/user/stdout/node-p/") for key in client_keys(client, name, "out/"))


def client_keys(client: Any, bucket: str, prefix: str) -> set[str]:
    return {obj["Key"] for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}


RECORDS_DEVICE = """\
import os
from azureml_user.parallel_run import EntryScript

def init():
    with open(os.path.join(EntryScript().output_dir, EntryScript().agent_name + ".gpu"), "w") as handle:
        handle.write(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))

def run(mini_batch):
    return mini_batch
"""


def test_worker_gpus_give_each_child_one_device(tmp_path: Path, rabbitmq: Any) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "component.yaml").write_text(COMPONENT)
    (code / "entry.py").write_text(RECORDS_DEVICE)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"item{i}.txt").write_text(str(i))
    env = fleet_env(BATCHFLEET_STORE=str(tmp_path / "store"))
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-gpu"], 2, "--gpus", "7,9"):
        result = run_cli(
            "run", code / "component.yaml", "--broker", rabbitmq.url, "--store", tmp_path / "store",
            "--input", f"data={data}", "--output", f"out={tmp_path / 'out'}", "--no-progress", env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    found = {path.stem: path.read_text() for path in (tmp_path / "out").glob("*.gpu")}
    assert found == {"process001": "7", "process002": "9"}
    assert "GPUs 7,9" in (tmp_path / "workers" / "node-gpu.log").read_text()
