"""Shared fixtures of the chaos tier: a job over local files, driven against the session's RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos_helpers import EntryOptions, make_component, write_items
from tests.cluster import RabbitCluster
from tests.fleet_helpers import fleet_env


@dataclass
class LocalJob:
    """A component, its input folder, output folder, store and side-file folder under one root."""

    root: Path
    url: str
    count: int
    entry: EntryOptions
    spec: Path
    inputs: Path
    output: Path
    store: Path
    calls: Path
    logs: Path
    env: dict[str, str]

    def run_args(self, *settings: str) -> list[str | Path]:
        return [
            "run", self.spec, "--broker", self.url, "--store", self.store, "--input", f"data={self.inputs}",
            "--output", f"out={self.output}", "--no-progress", *settings,
        ]  # fmt: skip

    def attach_args(self, command: str, job_id: str) -> list[str | Path]:
        return [command, job_id, "--broker", self.url, "--store", self.store, "--no-progress"]

    def area(self, job_id: str) -> Path:
        return self.store / job_id

    def merged(self) -> str:
        return (self.output / "parallel_run_step.txt").read_text()


LocalJobFactory = Callable[..., LocalJob]


def job_factory(tmp_path: Path, url: str) -> LocalJobFactory:
    """make(count, **EntryOptions fields) -> a LocalJob on the broker at `url`, whose entry script
    records each call. A relative broken_flag or pause is a file name under the job's root."""

    def make(count: int, **entry_fields: object) -> LocalJob:
        for name in ("broken_flag", "pause"):
            if isinstance(entry_fields.get(name), str):
                entry_fields[name] = tmp_path / str(entry_fields[name])
        calls = tmp_path / "calls"
        calls.mkdir(exist_ok=True)
        entry = EntryOptions(calls=calls, **entry_fields)  # type: ignore[arg-type]
        spec = make_component(tmp_path / "code", entry)
        return LocalJob(
            root=tmp_path, url=url, count=count, entry=entry, spec=spec,
            inputs=write_items(tmp_path / "in", count), output=tmp_path / "out", store=tmp_path / "store",
            calls=calls, logs=tmp_path / "workers", env=fleet_env(BATCHFLEET_STORE=str(tmp_path / "store")),
        )  # fmt: skip

    return make


@pytest.fixture
def local_job(tmp_path: Path, rabbitmq) -> LocalJobFactory:  # type: ignore[no-untyped-def]
    """A LocalJob factory on the session's RabbitMQ node (see job_factory)."""
    return job_factory(tmp_path, rabbitmq.url)


@pytest.fixture
def cluster(rabbit_cluster: RabbitCluster) -> Iterator[RabbitCluster]:
    """The session's three-node cluster with every node running, before and after the test."""
    rabbit_cluster.heal()
    try:
        yield rabbit_cluster
    finally:
        rabbit_cluster.heal()
