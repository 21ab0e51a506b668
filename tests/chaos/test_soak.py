"""Soak: 20,000 one-item mini-batches while worker children and whole nodes are killed at random.

Not part of the normal runs: `pytest -m soak` (BATCHFLEET_SOAK_BATCHES and BATCHFLEET_SOAK_SEED tune it).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chaos_helpers import (
    CHAOS,
    EntryOptions,
    Stopwatch,
    assert_exactly_once,
    expected_lines,
    frames,
    kill_group,
    make_component,
    only_job,
    report_rows,
    spawned_children,
    start_coordinator,
    state,
    wait_exit,
    write_items,
)
from tests.fleet_helpers import fleet_env, start_worker, stop

pytestmark = [*CHAOS, pytest.mark.soak, pytest.mark.timeout(1800)]

WARM_UP = 5.0  # seconds a new worker needs here to spawn its children and take work


@dataclass
class Chaos:
    """Kills children and nodes at random while keeping two nodes serving."""

    url: str
    logs: Path
    env: dict[str, str]
    rng: random.Random
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    born: dict[str, float] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    started: int = 0

    def add_node(self) -> None:
        self.started += 1
        name = f"node-{self.started}"
        self.nodes[name] = start_worker(self.url, name, self.logs, self.env)
        self.born[name] = time.monotonic()

    def strike(self) -> None:
        """Kill in a node that has had time to start working (a node still booting holds nothing)."""
        now = time.monotonic()
        working = [name for name in sorted(self.nodes) if now - self.born[name] >= WARM_UP]
        name = self.rng.choice(working or sorted(self.nodes))
        if self.rng.random() < 0.2:
            kill_group(self.nodes.pop(name))
            self.kills["nodes"] += 1
            self.add_node()
            return
        children = spawned_children(self.nodes[name])
        if children:
            os.kill(self.rng.choice(children).pid, signal.SIGKILL)
            self.kills["children"] += 1

    def close(self) -> None:
        for proc in self.nodes.values():
            stop(proc)


def test_soak_random_kills(tmp_path: Path, rabbitmq) -> None:  # type: ignore[no-untyped-def]
    count = int(os.environ.get("BATCHFLEET_SOAK_BATCHES", "20000"))
    seed = int(os.environ.get("BATCHFLEET_SOAK_SEED", str(int(time.time()))))
    # a trivial run(), yet long enough that child kills land inside it rather than between batches
    spec = make_component(tmp_path / "code", EntryOptions(delay=0.003))
    inputs = write_items(tmp_path / "in", count)
    output, store, log = tmp_path / "out", tmp_path / "store", tmp_path / "run.log"
    chaos = Chaos(rabbitmq.url, tmp_path / "workers", fleet_env(BATCHFLEET_STORE=str(store)), random.Random(seed))
    clock = Stopwatch()
    try:
        for _ in range(2):
            chaos.add_node()
        run = start_coordinator(
            "run", spec, "--broker", rabbitmq.url, "--store", store, "--input", f"data={inputs}",
            "--output", f"out={output}", "--mini_batch_size", "1", "--run_max_try", "6", "--no-progress",
            env=chaos.env, log=log,
        )  # fmt: skip
        while run.poll() is None:
            time.sleep(chaos.rng.uniform(1.0, 3.0))
            if run.poll() is None:
                chaos.strike()
        rc = wait_exit(run, 60, log)
    finally:
        chaos.close()
    took = clock()
    assert rc == 0, log.read_text()[-3000:]
    assert_exactly_once((output / "parallel_run_step.txt").read_text(), expected_lines(count))
    area = store / only_job(store)
    records = frames(str(area))
    attempts = report_rows(output, "attempts.csv")
    processed = report_rows(output, "processed_mini-batches.csv")
    tries = Counter(int(row["tries"]) for row in processed)
    print(
        f"\nsoak seed {seed}: {count} mini-batches in {took:.1f}s ({count / took:.0f}/s); "
        f"kills: {chaos.kills['children']} children, {chaos.kills['nodes']} nodes ({chaos.started} nodes started); "
        f"retried tries: {sum(1 for row in attempts if row['outcome'] == 'retry')}; "
        f"frames committed twice: {len(records) - len({r.batch_id for r in records})}; "
        f"duplicate reports: {state(area)['duplicates']}; tries per batch: {dict(sorted(tries.items()))}"
    )
    assert state(area)["batches_failed"] == 0 and len(processed) == count
    assert sum(chaos.kills.values()) >= 5, "too few kills landed for a soak; raise BATCHFLEET_SOAK_BATCHES"
