"""What a node gets ready before a job's children start: the code copy, the job's Python
environment, and its side inputs; and a line saying what each cost, for the job's report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.messages import JobConfig
from common.storage import StorageOptions
from worker.download.sideinputs import SideInput, fetch_side_inputs, localize_args
from worker.download.snapshot import fetch_code
from worker.intake.layout import NodeLayout
from worker.run.environment import BuiltEnvironment, ensure_environment, python_pin_note, wanted

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The node's view of a job's run-time: args with local paths, the interpreter children run."""

    args: list[str]
    code: str = ""
    environment: BuiltEnvironment | None = None
    inputs: list[SideInput] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    used: list[Path] = field(default_factory=list)  # the cache entries this job runs from

    @property
    def python(self) -> str | None:
        return str(self.environment.python) if self.environment is not None else None

    @property
    def site_packages(self) -> list[str]:
        return self.environment.site_packages if self.environment is not None else []

    def describe(self) -> str:
        parts = [self.code] if self.code else []
        parts += [self.environment.describe()] if self.environment is not None else []
        parts += [item.describe() for item in self.inputs]
        parts += [f"note: {note}" for note in self.notes]
        return "; ".join(parts)


def environment_log(layout: NodeLayout, node_id: str) -> Path:
    return layout.log_root / "sys" / "environment" / f"{node_id}.txt"


def prepare_job(
    job: JobConfig, layout: NodeLayout, work_root: Path, node_id: str, options: StorageOptions, mode: str = "job"
) -> Prepared:
    """Raise BatchfleetError (EnvironmentBuildError for a failed build) when the job cannot run here."""
    started = time.perf_counter()
    downloaded = fetch_code(job, layout.code_dir, options)
    prepared = Prepared(args=list(job.args))
    if job.code_hash:
        how = f"downloaded in {time.perf_counter() - started:.2f} s" if downloaded else "cached"
        prepared.code = f"code {job.code_hash[:12]} {how}"
    env = job.python_env
    if wanted(env, job.settings.environment if mode == "job" else "current"):
        assert env is not None
        prepared.environment = ensure_environment(env, work_root, environment_log(layout, node_id))
        prepared.notes = list(prepared.environment.notes)
    elif env is not None:
        prepared.notes = [*env.notes(), *filter(None, [python_pin_note(env.python)])]
        if env.requirements:
            prepared.notes.append(f"{len(env.requirements)} pip requirements not installed: this node runs current")
    prepared.inputs = fetch_side_inputs(job, work_root, options, layout.root)
    prepared.used = [layout.code_dir, *(item.folder for item in prepared.inputs)]
    if prepared.environment is not None:
        prepared.used.append(prepared.environment.folder)
    prepared.args = localize_args(job.args, prepared.inputs)
    log.info("job %s ready on this node: %s", job.job_id, prepared.describe())
    return prepared
