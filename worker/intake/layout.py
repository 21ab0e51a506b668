"""Where one node keeps a job's local files: logs, user outputs, working dir, code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.messages import JobConfig
from common.storage import is_remote


@dataclass(frozen=True)
class NodeLayout:
    root: Path
    log_root: Path
    output_dir: Path
    working_dir: Path
    code_dir: Path
    logs_are_local: bool
    output_is_local: bool


def node_layout(job: JobConfig, work_root: Path) -> NodeLayout:
    """Local outputs and logs are written in place; remote ones are staged and uploaded."""
    root = work_root / job.job_id
    output_is_local = not is_remote(job.output_uri)
    log_root = Path(job.output_uri) / "logs" if output_is_local else root / "logs"
    output_dir = Path(job.output_uri) if output_is_local else root / "output"
    code_dir = Path(job.code_uri) if not is_remote(job.code_uri) else root / "code"
    return NodeLayout(
        root=root,
        log_root=log_root,
        output_dir=output_dir,
        working_dir=root / "wd",
        code_dir=code_dir,
        logs_are_local=output_is_local,
        output_is_local=output_is_local,
    )
