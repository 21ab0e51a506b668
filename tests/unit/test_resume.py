"""Resume: a failed job re-runs only the batches without a committed part."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_helpers import COMPONENT, batchfleet, make_component

FLAKY = """\
import os
BLOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "block")

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    with open(os.path.join(os.path.dirname(BLOCK), "calls.log"), "a") as log:
        log.write(" ".join(names) + "\\n")
    if os.path.exists(BLOCK) and "item007.txt" in names:
        raise RuntimeError("blocked")
    return names
"""


def test_resume_reruns_only_failed_batches(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "comp", COMPONENT, FLAKY, files=12)
    (tmp_path / "comp" / "block").write_text("")
    store, out = tmp_path / "store", tmp_path / "out"
    common = ("--store", store, "--no-progress")
    first = batchfleet(
        "run",
        spec,
        "--input",
        f"data={tmp_path / 'comp' / 'data'}",
        "--output",
        f"scored={out}",
        "--mini_batch_size",
        "2",
        "--run_max_try",
        "2",
        "--process_count_per_node",
        "1",
        *common,
    )
    assert first.code == 0, first.stderr  # default thresholds tolerate the failure
    state = json.loads(next(store.glob("*/state.json")).read_text())
    assert state["batches_failed"] == 1 and state["batches_committed"] == 5
    job_id = state["job_id"]
    (tmp_path / "comp" / "block").unlink()
    (tmp_path / "comp" / "calls.log").unlink()
    again = batchfleet("resume", job_id, *common)
    assert again.code == 0, again.stderr
    calls = (tmp_path / "comp" / "calls.log").read_text().splitlines()
    assert calls == ["item006.txt item007.txt"]
    merged = (out / "parallel_run_step.txt").read_text().splitlines()
    assert merged == [f"item{i:03d}.txt" for i in range(12)]
    final = json.loads((store / job_id / "state.json").read_text())
    assert final["state"] == "succeeded" and final["reused"] == 5 and final["batches_failed"] == 0
    assert "5 reused" in (out / "logs" / "job_result.txt").read_text()


def test_resume_unknown_job(tmp_path: Path) -> None:
    result = batchfleet("resume", "no-such-job", "--store", tmp_path, "--no-progress")
    assert result.code == 2 and "no job no-such-job" in result.stderr and "Traceback" not in result.stderr
