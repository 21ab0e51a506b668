"""Scaling out: job time with 1, 2 and 3 worker nodes (one process each), and a node joining mid-job.

Run from the repository root:  python -m benchmarks.scaling [--batches 48] [--work-ms 150]
Starts a private RabbitMQ node (Debian's rabbitmq-server) unless BATCHFLEET_BENCH_AMQP_URL is set.
On a machine with C cores, speed-up is capped near C: the figures say how close each step gets.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.fleet_helpers import fleet_env, run_cli, start_worker, stop, wait_for
from tests.servers import start_rabbitmq

ENTRY = """\
import hashlib, os, time
WORK = float(os.environ.get("BENCH_WORK_MS", "150")) / 1000

def run(mini_batch):
    rows = []
    for path in mini_batch:
        end = time.process_time() + WORK
        digest = b"x"
        while time.process_time() < end:
            digest = hashlib.sha256(digest).digest()
        rows.append(f"{os.path.basename(path)} {digest.hex()[:8]}")
    return rows
"""

COMPONENT = """\
name: bench.scaling
type: ParallelComponent
inputs:
  data: {type: path}
outputs:
  out: {type: path}
parallel:
  input_data: inputs.data
  output_data: outputs.out
  entry: entry.py
  args: ""
"""


def prepare(root: Path, batches: int) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    for i in range(batches):
        (root / "data" / f"item{i:04d}.txt").write_text(str(i))
    (root / "component.yaml").write_text(COMPONENT)
    (root / "entry.py").write_text(ENTRY)
    return root / "component.yaml"


def run_job(url: str, spec: Path, root: Path, tag: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = run_cli(
        "run",
        spec,
        "--broker",
        url,
        "--store",
        root / "store",
        "--input",
        f"data={spec.parent / 'data'}",
        "--output",
        f"out={root / tag}",
        "--mini_batch_size",
        "1",
        "--no-progress",
        env=env,
    )
    if result.returncode != 0:
        sys.exit(f"job {tag} failed: {result.stderr.strip()}")
    return time.perf_counter() - start


def nodes_used(root: Path, tag: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(root / tag / "logs" / "sys" / "job_report" / "processed_mini-batches.csv") as handle:
        for row in csv.DictReader(handle):
            counts[row["node"]] = counts.get(row["node"], 0) + 1
    return counts


def scaling(url: str, spec: Path, root: Path, env: dict[str, str]) -> dict[int, float]:
    times: dict[int, float] = {}
    for n in (1, 2, 3):
        procs = [start_worker(url, f"n{n}-{i}", root / "workers", env, 1) for i in range(n)]
        time.sleep(3)  # let the workers connect and warm up
        try:
            times[n] = run_job(url, spec, root, f"scale{n}", env)
        finally:
            for proc in procs:
                stop(proc)
        print(f"  {n} node(s): {times[n]:.2f} s  nodes used {nodes_used(root, f'scale{n}')}", flush=True)
    return times


def joining(url: str, spec: Path, root: Path, env: dict[str, str]) -> dict[str, int]:
    first = start_worker(url, "early", root / "workers", env, 1)
    late = None
    try:
        result = run_cli(
            "run",
            spec,
            "--broker",
            url,
            "--store",
            root / "store",
            "--input",
            f"data={spec.parent / 'data'}",
            "--output",
            f"out={root / 'join'}",
            "--mini_batch_size",
            "1",
            "--detach",
            env=env,
        )
        job_id = result.stdout.strip()
        state = root / "store" / job_id / "state.json"
        wait_for(lambda: state.exists() and json.loads(state.read_text())["batches_committed"] >= 5, timeout=120)
        late = start_worker(url, "late", root / "workers", env, 1)
        wait_for(lambda: json.loads(state.read_text())["state"] != "running", timeout=600, interval=0.5)
    finally:
        for proc in (first, late):
            if proc is not None:
                stop(proc)
    return nodes_used(root, "join")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=48)
    parser.add_argument("--work-ms", type=int, default=150)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bf-scaling-"))
    env = fleet_env(BENCH_WORK_MS=str(args.work_ms), BATCHFLEET_STORE=str(root / "store"))
    node = None
    url = os.environ.get("BATCHFLEET_BENCH_AMQP_URL")
    if not url:
        (root / "rabbitmq").mkdir(parents=True, exist_ok=True)
        node = start_rabbitmq(root / "rabbitmq")
        url = node.url
    try:
        spec = prepare(root / "job", args.batches)
        print(f"scaling: {args.batches} mini-batches of {args.work_ms} ms CPU each, {os.cpu_count()} cores")
        times = scaling(url, spec, root, env)
        joined = joining(url, spec, root, env)
    finally:
        if node is not None:
            node.close()
    speedup = {n: round(times[1] / t, 2) for n, t in times.items()}
    print(f"  speed-up over 1 node: {speedup}")
    print(f"  node joining mid-job took {joined.get('late', 0)} of {sum(joined.values())} mini-batches: {joined}")
    print(
        json.dumps(
            {
                "benchmark": "scaling",
                "seconds": times,
                "speedup": speedup,
                "joined": joined,
                "cpus": os.cpu_count(),
                "batches": args.batches,
                "work_ms": args.work_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
