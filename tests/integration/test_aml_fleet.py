"""Azure ML behaviours on a real fleet: a node whose init() fails is dropped and the job goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import COMPONENT, fleet_env, run_cli, workers

pytestmark = pytest.mark.integration

INIT_FAILS_ON_ONE_NODE = """\
import time
from azureml_user.parallel_run import EntryScript

def init():
    if EntryScript().node_id == "node-bad":
        raise OSError("no model on this node")

def run(mini_batch):
    time.sleep(0.4)  # long enough that the bad node gives up before the job ends
    return [path.rsplit("/", 1)[-1] for path in mini_batch]
"""


def test_a_node_whose_init_fails_is_dropped(tmp_path: Path, rabbitmq: Any) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "component.yaml").write_text(COMPONENT)
    (code / "entry.py").write_text(INIT_FAILS_ON_ONE_NODE)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(12):
        (data / f"item{i:02d}.txt").write_text(str(i))
    env = fleet_env()
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
