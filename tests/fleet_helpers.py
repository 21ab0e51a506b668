"""Start fleet processes (workers, coordinators) as separate OS processes for tests."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_ENTRY = """\
import os
from azureml_user.parallel_run import EntryScript

def init():
    global out
    out = EntryScript().output_dir

def run(mini_batch):
    rows = []
    for path in mini_batch:
        name = os.path.basename(path)
        with open(path) as handle:
            text = handle.read().strip()
        with open(os.path.join(out, name + ".done"), "w") as handle:
            handle.write(text)
        rows.append(f"{name} {text}")
    return rows
"""

COMPONENT = """\
$schema: https://componentsdk.azureedge.net/jsonschema/ParallelComponent.json
name: fleet.test
version: 0.0.1
type: ParallelComponent
inputs:
  data: {type: path}
outputs:
  out: {type: path}
parallel:
  input_data: inputs.data
  output_data: outputs.out
  entry: entry.py
  args: --output {outputs.out}
"""


# Fleets in tests are signed, as a fleet must be; `fleet_env(signed=False)` runs one --insecure.
TEST_SIGNING_KEY = "bf-tests-fleet-signing-key-0f3a9c"
TRUST_VARS = ("BATCHFLEET_SIGNING_KEY", "BATCHFLEET_SIGNING_KEY_FILE", "BATCHFLEET_INSECURE")


def fleet_env(s3_endpoint: str | None = None, *, signed: bool = True, **extra: str) -> dict[str, str]:
    """The environment of fleet processes: signed with TEST_SIGNING_KEY unless `extra` brings its own
    key (or `signed` is False: then BATCHFLEET_INSECURE=1). Pass BATCHFLEET_STORE=<store> so workers
    take jobs from it (their --store-allow default)."""
    env = {name: value for name, value in os.environ.items() if name not in TRUST_VARS}
    env.update(extra)
    if s3_endpoint:
        env["AWS_ENDPOINT_URL"] = s3_endpoint
    env.pop("BATCHFLEET_BROKER", None)
    if not signed:
        env["BATCHFLEET_INSECURE"] = "1"
    elif not any(name in extra for name in TRUST_VARS):
        env["BATCHFLEET_SIGNING_KEY"] = TEST_SIGNING_KEY
    return env


def start_worker(
    url: str, node_id: str, log_dir: Path, env: dict[str, str], processes: int = 2, *extra: str
) -> subprocess.Popen[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{node_id}.log", "ab") as out:
        return spawn_worker(url, node_id, log_dir, env, processes, out, *extra)


def spawn_worker(
    url: str,
    node_id: str,
    log_dir: Path,
    env: dict[str, str],
    processes: int,
    out,  # type: ignore[no-untyped-def]
    *extra: str,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchfleet",
            "worker",
            "--broker",
            url,
            "--node-id",
            node_id,
            "--processes",
            str(processes),
            "--work-dir",
            str(log_dir / f"work-{node_id}"),
            "--grace",
            "10",
            "--log-level",
            "INFO",
            *extra,
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(10)


@contextmanager
def workers(
    url: str, log_dir: Path, env: dict[str, str], names: list[str], processes: int = 2, *extra: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_worker(url, name, log_dir, env, processes, *extra) for name in names]
    try:
        yield procs
    finally:
        for proc in procs:
            stop(proc)


def run_cli(*args: str | Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchfleet", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def nodes_in_report(csv_text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in csv.DictReader(csv_text.splitlines()):
        counts[row["node"]] = counts.get(row["node"], 0) + 1
    return counts


def wait_for(predicate, timeout: float = 60, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
