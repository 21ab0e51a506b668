"""Fleet mode as on separate machines: each worker with its own HOME, TMPDIR and work root, the
store and every input on the S3 endpoint; the code travels as a snapshot (its data left out by
.amlignore), the environment is built on each node from a wheel, the model is a side input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import fleet_env, run_cli, stop
from tests.multihost_helpers import Host, build_wheel, python_pin

pytestmark = pytest.mark.integration

ENTRY = """\
import argparse
import os

import bfdep  # installed in the job's environment only, never in the worker's


def init():
    global model, out
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    args, _ = parser.parse_known_args()
    here = os.path.dirname(os.path.abspath(__file__))
    # The snapshot left the data folder behind, and the code copy is not the working directory.
    assert not os.path.exists(os.path.join(here, "data")), "the data folder travelled with the code"
    assert os.getcwd() != here
    with open("scratch.txt", "w") as handle:  # a file init() writes lands in the job's own folder
        handle.write("init ran here")
    with open(args.model) as handle:
        model = handle.read().strip()


def run(mini_batch):
    rows = []
    for path in mini_batch:
        with open(path) as handle:
            rows.append(f"{os.path.basename(path)} {handle.read().strip()} {model} {bfdep.VALUE}")
    return rows
"""

COMPONENT = """\
$schema: https://componentsdk.azureedge.net/jsonschema/ParallelComponent.json
name: multihost.test
version: 0.0.1
type: ParallelComponent
inputs:
  model: {{type: path}}
  data: {{type: path}}
outputs:
  out: {{type: path}}
environment:
  docker:
    image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04
  conda:
    conda_dependencies:
      name: project_environment
      dependencies:
      - python={python}
      - pip:
        - bfdep==1.0
parallel:
  input_data: inputs.data
  output_data: outputs.out
  entry: entry.py
  args: --model {{inputs.model}}
"""

ITEMS = 24


def make_code(root: Path) -> Path:
    """A component folder that also holds its data (as the repository's example does)."""
    (root / "data").mkdir(parents=True)
    for i in range(ITEMS):
        (root / "data" / f"item{i:03d}.txt").write_text(f"value-{i}")
    (root / "entry.py").write_text(ENTRY)
    (root / "component.yaml").write_text(COMPONENT.format(python=python_pin()))
    (root / ".amlignore").write_text("data/\n*.ckpt\n")
    (root / "big.ckpt").write_bytes(b"\0" * 4096)
    return root / "component.yaml"


def upload_folder(client: Any, bucket: str, folder: Path, prefix: str) -> None:
    for path in sorted(folder.iterdir()):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())


def keys(client: Any, bucket: str, prefix: str) -> dict[str, Any]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"]: obj["LastModified"] for page in pages for obj in page.get("Contents", [])}


def read(client: Any, bucket: str, key: str) -> str:
    return str(client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def run_job(spec: Path, url: str, bucket: str, out: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", spec, "--broker", url, "--store", f"{bucket}/store",
        "--input", f"data={bucket}/in", "--input", f"model={bucket}/models/model.txt",
        "--output", f"out={bucket}/{out}", "--mini_batch_size", "4", "--no-progress", env=env,
    )  # fmt: skip


def test_a_job_travels_to_workers_that_share_nothing_but_broker_and_store(tmp_path: Path, rabbitmq, s3) -> None:
    bucket = s3.make_bucket()
    name = bucket.removeprefix("s3://")
    client = s3.client()
    coordinator = tmp_path / "coordinator"
    spec = make_code(coordinator / "code")
    upload_folder(client, name, coordinator / "code" / "data", "in")
    client.put_object(Bucket=name, Key="models/model.txt", Body=b"model-v1\n")
    wheels = build_wheel(tmp_path / "wheels", "bfdep", "1.0", 'VALUE = "dep-ok"\n').parent
    base = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")
    hosts = [Host("host-a", tmp_path / "host-a"), Host("host-b", tmp_path / "host-b")]
    procs = [host.start(rabbitmq.url, base, wheels) for host in hosts]
    try:
        first = run_job(spec, rabbitmq.url, bucket, "out1", base)
        assert first.returncode == 0, first.stderr + first.stdout
        snapshot = keys(client, name, "store/_code/")
        second = run_job(spec, rabbitmq.url, bucket, "out2", base)
        assert second.returncode == 0, second.stderr + second.stdout
    finally:
        for proc in procs:
            stop(proc)
    expected = [f"item{i:03d}.txt value-{i} model-v1 dep-ok" for i in range(ITEMS)]
    for out in ("out1", "out2"):
        assert read(client, name, f"{out}/parallel_run_step.txt").splitlines() == expected
    # Snapshot small: three files, stored once, not uploaded again by the second job.
    files = {key.split("/", 3)[3] for key in snapshot if not key.endswith(".done")}
    assert files == {"component.yaml", "entry.py", ".amlignore"}, files
    assert keys(client, name, "store/_code/") == snapshot
    for host in hosts:
        first_log = read(client, name, f"out1/logs/sys/environment/{host.name}.txt")
        second_log = read(client, name, f"out2/logs/sys/environment/{host.name}.txt")
        assert first_log.count("\nbuilt\n") == 1 and "cached" not in first_log, first_log
        assert "cached" in second_log and "built" not in second_log, second_log
        assert "docker image mcr.microsoft.com" in first_log
        # Work folders are gone; the code, environment and input caches stay for the next job.
        left = sorted(path.name for path in host.work.iterdir())
        assert left == ["code", "envs", "inputs"], left
    result = read(client, name, "out2/logs/job_result.txt")
    assert "Environment: built on each node" in result
    assert "docker image mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04 is recorded, not used" in result
    for host in hosts:
        line = next(x for x in result.splitlines() if x.startswith(f"Node {host.name}:"))
        assert "code" in line and "cached" in line and "input model 9 bytes" in line, line
    state = json.loads(read(client, name, "store/" + _job_of(client, name, "out1") + "/state.json"))
    assert {node: "input model" in seen["prepared"] for node, seen in state["nodes"].items()} == {
        "host-a": True,
        "host-b": True,
    }


def _job_of(client: Any, bucket: str, out: str) -> str:
    return read(client, bucket, f"{out}/logs/job_result.txt").split()[1]


def test_a_failed_environment_build_fails_the_job_with_the_build_log_tail(tmp_path: Path, rabbitmq, s3) -> None:
    bucket = s3.make_bucket()
    name = bucket.removeprefix("s3://")
    client = s3.client()
    spec = make_code(tmp_path / "coordinator" / "code")
    spec.write_text(spec.read_text().replace("bfdep==1.0", "bfnowhere==9.9"))
    upload_folder(client, name, spec.parent / "data", "in")
    client.put_object(Bucket=name, Key="models/model.txt", Body=b"model-v1\n")
    wheels = build_wheel(tmp_path / "wheels", "bfdep", "1.0", 'VALUE = "dep-ok"\n').parent
    base = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")
    host = Host("host-a", tmp_path / "host-a")
    proc = host.start(rabbitmq.url, base, wheels)
    try:
        result = run_job(spec, rabbitmq.url, bucket, "out", base)
    finally:
        stop(proc)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("batchfleet: error: ")]
    assert len(errors) == 1 and "node host-a could not build the job's environment" in errors[0], result.stderr
    assert "bfnowhere" in errors[0], errors[0]  # the build log's last lines say what was missing
    build_log = read(client, name, "out/logs/sys/environment/host-a.txt")
    assert "bfnowhere" in build_log and "uv" in build_log
    job_result = read(client, name, "out/logs/job_result.txt")
    assert "could not build the job's environment" in job_result and "bfnowhere" in job_result
    assert sorted(path.name for path in host.work.iterdir()) == ["code", "envs"]  # the job's folder is gone
    assert not any(host.work.glob("envs/*/bin"))  # a failed build leaves no environment behind
