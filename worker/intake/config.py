"""What a worker node is told when it starts (the `worker` command and the embedded node build it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.storage import StorageOptions
from worker.intake.identity import host_label, new_session


@dataclass
class NodeConfig:
    node_id: str
    work_root: Path
    processes: int | None = None
    storage_options: StorageOptions | None = None
    heartbeat_interval: float = 5.0
    commit_timeout: float = 300.0
    signing_key: bytes | None = None
    sample_perf: bool = True
    gpus: list[str] = field(default_factory=list)  # one child per GPU when the job does not set process_count_per_node
    environment: str = "job"  # "current": children run in this Python whatever the job asks
    keep_work: bool = False  # keep <work root>/<session>/<job> after leaving a job (debugging)
    store_roots: tuple[str, ...] = ()  # announced jobs are read only from these (see intake/announcements.py)
    secrets: tuple[str, ...] = ()  # masked in what the node reports and uploads (key, passwords, tokens)
    session: str = field(default_factory=new_session)  # this process's token: in its events and file names
    host: str = field(default_factory=host_label)
