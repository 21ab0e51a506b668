"""Where one node keeps a job's local files: logs, user outputs, working dir, code.

Everything a job owns on a node is below `root` (`<work root>/<session>/<job id>`), removed when the node
leaves the job; the code copy is the node's, per content hash, and children run in `working_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.messages import JobConfig
from common.storage import is_remote
from worker.download.snapshot import code_cache


@dataclass(frozen=True)
class NodeLayout:
    root: Path
    log_root: Path
    output_dir: Path
    working_dir: Path
    code_dir: Path
    logs_are_local: bool
    output_is_local: bool


def node_layout(job: JobConfig, work_root: Path, session: str = "") -> NodeLayout:
    """Local outputs and logs are written in place; remote ones are staged and uploaded. With the node
    process's `session`, the job's folder is `<work root>/<session>/<job id>` (see worker/intake/identity.py)."""
    root = (work_root / session if session else work_root) / job.job_id
    output_is_local = not is_remote(job.output_uri)
    log_root = Path(job.output_uri) / "logs" if output_is_local else root / "logs"
    output_dir = Path(job.output_uri) if output_is_local else root / "output"
    code_dir = code_cache(work_root, job)  # shared by the jobs with the same code; outside `root`
    return NodeLayout(
        root=root,
        log_root=log_root,
        output_dir=output_dir,
        working_dir=root / "wd",
        code_dir=code_dir,
        logs_are_local=output_is_local,
        output_is_local=output_is_local,
    )
