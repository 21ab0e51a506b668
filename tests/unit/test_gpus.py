"""GPUs: detection (faked: no GPU is needed), one child per GPU, exactly one device per child."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.errors import UsageError
from common.settings import RunSettings
from tests.cli_helpers import batchfleet, make_component
from worker.intake.gpus import detect_gpus, device_for, parse_gpus, process_count


def fake_nvidia_smi(folder: Path, output: str, code: int = 0) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'OUT'\n{output}OUT\nexit {code}\n")
    exe.chmod(0o755)
    return {"PATH": str(folder)}


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("0,1", ["0", "1"]),
        ("2", ["2"]),
        ("", []),
        ("-1", []),
        ("0,-1,2", ["0"]),
        ("GPU-8f3a,GPU-77b1", ["GPU-8f3a", "GPU-77b1"]),
    ],
)
def test_cuda_visible_devices_wins(tmp_path: Path, visible: str, expected: list[str]) -> None:
    env = fake_nvidia_smi(tmp_path, "GPU 0: A\nGPU 1: B\nGPU 2: C\n") | {"CUDA_VISIBLE_DEVICES": visible}
    assert detect_gpus(env) == expected


@pytest.mark.skipif(os.name == "nt", reason="the fake nvidia-smi is a shell script")
def test_nvidia_smi_lists_the_devices(tmp_path: Path) -> None:
    listed = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-2)\n"
    assert detect_gpus(fake_nvidia_smi(tmp_path, listed)) == ["0", "1"]
    assert detect_gpus(fake_nvidia_smi(tmp_path / "bad", "NVIDIA-SMI has failed\n", code=9)) == []
    assert detect_gpus({"PATH": str(tmp_path / "empty")}) == []


def test_gpus_flag() -> None:
    assert parse_gpus("0,1") == ["0", "1"]
    assert parse_gpus("none") == []
    assert parse_gpus("auto", {"CUDA_VISIBLE_DEVICES": "4,5", "PATH": ""}) == ["4", "5"]
    for bad, words in (("0;1", "'0;1' is not a GPU index"), ("1,1", "names a device twice")):
        with pytest.raises(UsageError) as caught:
            parse_gpus(bad)
        assert words in caught.value.line()


@pytest.mark.parametrize(
    ("node", "job", "gpus", "expected"),
    [
        (None, None, ["0", "1", "2"], 3),  # Azure ML: one process per GPU
        (None, 2, ["0", "1", "2"], 2),  # the job says
        (4, 2, ["0"], 4),  # --processes on the worker says
        (None, None, [], os.cpu_count() or 1),
    ],
)
def test_process_count(node: int | None, job: int | None, gpus: list[str], expected: int) -> None:
    assert process_count(node, RunSettings(process_count_per_node=job), gpus) == expected


def test_each_child_gets_one_device_round_the_list() -> None:
    gpus = ["3", "5"]
    assert [device_for(f"process{i:03d}", gpus) for i in (1, 2, 3, 4)] == ["3", "5", "3", "5"]
    assert device_for("process001", []) is None


RECORDS_DEVICE = """\
import argparse, glob, os, time
from azureml_user.parallel_run import EntryScript

def init():
    parser = argparse.ArgumentParser()
    parser.add_argument("--process_count_per_node")
    count = parser.parse_known_args()[0].process_count_per_node
    with open(os.path.join(EntryScript().output_dir, EntryScript().agent_name + ".gpu"), "w") as handle:
        handle.write(os.environ.get("CUDA_VISIBLE_DEVICES", "unset") + " " + count)

def run(mini_batch):
    # The job is one batch: hold it until every child has been through init() (a slow
    # spawn under load would otherwise be stopped with the job, before it wrote its device).
    deadline = time.monotonic() + 60
    while len(glob.glob(os.path.join(EntryScript().output_dir, "*.gpu"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    return mini_batch
"""


def test_embedded_run_uses_one_process_per_gpu(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "code", entry=RECORDS_DEVICE, files=4)
    result = batchfleet(
        "run", spec, "--input", f"data={tmp_path / 'code' / 'data'}", "--output", f"scored={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress", env={"CUDA_VISIBLE_DEVICES": "3,5,6"},
    )  # fmt: skip
    assert result.code == 0, result.stderr
    found = {path.stem: path.read_text() for path in (tmp_path / "out").glob("*.gpu")}
    # One child per GPU, and the script's --process_count_per_node says so (not the CPU count).
    assert found == {"process001": "3 3", "process002": "5 3", "process003": "6 3"}


def test_worker_refuses_a_bad_gpu_list() -> None:
    result = batchfleet("worker", "--broker", "amqp://127.0.0.1:1/", "--gpus", "0,x y")
    assert result.code == 2 and len(result.error_lines) == 1
    assert "--gpus: 'x y' is not a GPU index or UUID" in result.error_lines[0]
