"""Embedded mode's worker: a node in the coordinator's own process, fed by the in-memory broker.

This is the one coordinator module that imports `worker`; a fleet's coordinator never loads it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from common.broker.base import Broker
from common.messages import JobConfig
from coordinator.scratch import scratch_dir
from worker.intake.gpus import detect_gpus
from worker.intake.node import NodeConfig, WorkerNode
from worker.run.standby import Standby

__all__ = ["EmbeddedNode", "Standby", "start_node"]


@dataclass
class EmbeddedNode:
    """The in-process node serving one job, and the scratch folder it owns (if any)."""

    node: WorkerNode
    scratch: Path | None

    def stop(self, grace: float = 10.0) -> None:
        self.node.stop(grace)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def start_node(
    broker: Broker,
    job: JobConfig,
    node_id: str,
    work_root: Path | None,
    signing_key: bytes | None,
    secrets: tuple[str, ...] = (),
    standby: Standby | None = None,
) -> EmbeddedNode:
    """Start a node that serves `job` (children start and init() while the plan is made)."""
    scratch = None
    if work_root is None:
        work_root = scratch = scratch_dir("node")
    config = NodeConfig(
        node_id=node_id,
        work_root=work_root,
        sample_perf=False,
        signing_key=signing_key,
        gpus=detect_gpus(),
        secrets=secrets,
    )
    node = WorkerNode(broker, config, standby)
    node.start(listen=False)
    node.serve(job)
    return EmbeddedNode(node, scratch)
