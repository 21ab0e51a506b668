"""Build and run embedded jobs directly from a JobConfig (no spec parsing)."""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

from common.broker.memory import MemoryBroker
from common.messages import InputBinding, JobConfig
from common.settings import RunSettings
from common.storage import StorageOptions
from coordinator.follow.follower import Follower, Verdict
from coordinator.follow.tally import Tally
from coordinator.merger import merge_output
from coordinator.plan.submit import publish_plan, write_job, write_plan
from worker.intake.node import NodeConfig, WorkerNode
from worker.run.standby import Standby


def write_script(folder: Path, body: str, name: str = "entry.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def make_files(folder: Path, count: int, prefix: str = "f") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i:05d}.txt"
        path.write_text(f"item {i}\n")
        paths.append(path)
    return paths


def make_job(
    tmp: Path, code: Path, data: Path, job_id: str = "job-1", per_message: int = 1, **settings: Any
) -> JobConfig:
    """A files job; `per_message` > 1 packs its mini-batches as a fleet coordinator does."""
    settings.setdefault("process_count_per_node", 2)
    return JobConfig(
        job_id=job_id,
        name="test",
        created_at=time.time(),
        code_uri=str(code),
        entry_script="entry.py",
        inputs={"data": InputBinding(name="data", uri=str(data))},
        input_data=["data"],
        outputs={"out": str(tmp / "out")},
        output_data="out",
        output_uri=str(tmp / "out"),
        store_uri=str(tmp / "store" / job_id),
        settings=RunSettings(**settings),
        batches_per_message=per_message,
    )


def submit_in_memory(job: JobConfig) -> tuple[MemoryBroker, int]:
    """Store the job, plan it and publish the plan on a fresh in-memory broker; (broker, batches)."""
    options = StorageOptions()
    broker = MemoryBroker()
    write_job(job, options)
    manifest, batches, _ = write_plan(job, options)
    broker.declare_job(job.job_id, job.settings.run_max_try)
    publish_plan(broker, job, manifest)
    shutil.rmtree(manifest.parent, ignore_errors=True)
    return broker, batches


def serve_and_follow(
    broker: MemoryBroker, job: JobConfig, batches: int, work_root: Path, standby: Standby | None = None
) -> tuple[Verdict, Tally]:
    """Serve a published job with one in-process node and follow it to its end."""
    node = WorkerNode(broker, NodeConfig(node_id="n1", work_root=work_root, heartbeat_interval=0.5), standby)
    node.start(listen=False)
    node.serve(job)
    tally = Tally(batches)
    try:
        verdict = Follower(broker, job, tally).follow()
    finally:
        node.stop()
    return verdict, tally


def run_embedded(
    job: JobConfig, work_root: Path, standby: Standby | None = None
) -> tuple[Verdict, Tally, tuple[str, int] | None]:
    """Plan, publish, serve with one in-process node (its children taken from `standby` first), follow, merge."""
    broker, batches = submit_in_memory(job)
    verdict, tally = serve_and_follow(broker, job, batches, work_root, standby)
    merged = merge_output(job, tally, StorageOptions()) if verdict.state == "succeeded" else None
    return verdict, tally, merged
