"""What a node starts a job's child processes with: the pool's settings and each child's spec.

The spec is plain values (children never import pydantic, architecture #19). It carries the node
process's session token, so every file a child writes (user logs, parts) is this process's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.settings import predefined_args
from common.storage import StorageOptions
from worker.intake.config import NodeConfig
from worker.intake.gpus import device_for
from worker.intake.runtime import JobRuntime
from worker.run.child import ChildJob
from worker.run.pool import PoolConfig, Task
from worker.run.standby import Standby

OnOutcome = Callable[[JobRuntime, Task, dict[str, Any], str], None]
OnInitFailed = Callable[[JobRuntime, str, str], None]


def pool_config(
    runtime: JobRuntime,
    config: NodeConfig,
    options: StorageOptions,
    on_outcome: OnOutcome,
    on_init_failed: OnInitFailed,
    standby: Standby | None = None,
) -> PoolConfig:
    """The job's child pool: its size and limits, and the node's callbacks bound to the job."""
    job = runtime.job
    return PoolConfig(
        processes=runtime.processes,
        run_timeout=job.settings.run_invocation_timeout,
        commit_timeout=config.commit_timeout,
        init_max_try=job.settings.init_max_try,
        spec_for=lambda process: child_spec(runtime, config, options, process),
        on_outcome=lambda task, outcome, process: on_outcome(runtime, task, outcome, process),
        on_init_failed=lambda line, tb: on_init_failed(runtime, line, tb),
        batch_seconds=lambda: runtime.batch_seconds,
        python=runtime.prepared.python,
        standby=standby,
    )


def child_spec(runtime: JobRuntime, config: NodeConfig, options: StorageOptions, process: str) -> dict[str, Any]:
    """Everything one child needs, as plain values."""
    job, layout = runtime.job, runtime.layout
    return {
        "job": ChildJob.of(job, runtime.prepared.args).as_dict(),
        "node_id": config.node_id,
        "session": config.session,
        "process": process,
        "log_root": str(layout.log_root),
        "output_dir": str(layout.output_dir),
        "working_dir": str(layout.working_dir),
        "code_dir": str(layout.code_dir),
        "site_packages": runtime.prepared.site_packages,
        "storage_options": options.model_dump(),
        "predefined_args": predefined_args(job.settings, job.entry_script, job.input_data, runtime.processes),
        "gpu": device_for(process, config.gpus),
    }
