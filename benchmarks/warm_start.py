"""Warm start: a second fleet job with the same code and environment pays no upload and no build.

A `batchfleet worker` (started before the timed runs, as a service) serves two jobs of the same
component: a code folder of a few hundred files (its data folder left out by .amlignore) and an
environment with one pip dependency, installed from a wheel this benchmark builds (no registry).
Job 1 uploads the snapshot and the worker builds the environment; job 2 finds both. Each run()
sleeps a fixed time and notes when it ran, so the batch time of a job is measured by the script.

    python benchmarks/warm_start.py                  # 16 mini-batches of 0.25 s, 2 processes
    python benchmarks/warm_start.py --batches 40 --sleep 0.1

Target: job 2's wall time (start-up included) is under job 1's batch time + 1 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import benchlib
from benchmarks.common import DEFAULT_WORK, BenchError, fresh_dir, machine

NAME = "warm_start"
TARGET = 1.0

ENTRY = """\
import os
import time

import bfbench
from azureml_user.parallel_run import EntryScript


def init():
    global times
    times = open(os.path.join(EntryScript().output_dir, f"times-{os.getpid()}.txt"), "a")


def run(mini_batch):
    start = time.time()
    time.sleep(SLEEP)
    times.write(f"{start} {time.time()}\\n")
    times.flush()
    return [f"{os.path.basename(path)} {bfbench.VALUE}" for path in mini_batch]
"""

COMPONENT = """\
$schema: https://componentsdk.azureedge.net/jsonschema/ParallelComponent.json
name: warm.start
version: 0.0.1
type: ParallelComponent
inputs:
  data: {type: path}
outputs:
  out: {type: path}
environment:
  conda:
    conda_dependencies:
      dependencies:
      - pip:
        - bfbench==1.0
parallel:
  input_data: inputs.data
  output_data: outputs.out
  entry: score.py
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=16, help="mini-batches per job (default 16)")
    parser.add_argument("--sleep", type=float, default=0.25, help="seconds each run() sleeps (default 0.25)")
    parser.add_argument("--code-files", type=int, default=300, help="files in the code folder (default 300)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / NAME, help="component, store, outputs")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per run")
    parser.add_argument("--json-out", type=Path, help="also write the summary to this file")
    return parser.parse_args(argv)


def make_component(root: Path, files: int, sleep: float, batches: int) -> Path:
    """The component (with helper modules and an ignored data folder) and its input files."""
    fresh_dir(root)
    (root / "score.py").write_text(ENTRY.replace("SLEEP", repr(sleep)))
    (root / "component.yaml").write_text(COMPONENT)
    (root / ".amlignore").write_text("data/\n")
    (root / "helpers").mkdir()
    for i in range(files):
        (root / "helpers" / f"module_{i:04d}.py").write_text(f"VALUE = {i}\n" + "# padding\n" * 200)
    (root / "data").mkdir()
    for i in range(batches):
        (root / "data" / f"item{i:04d}.txt").write_text(str(i))
    return root / "component.yaml"


def batch_span(output: Path) -> float:
    """First run() start to last run() end, from the times the script noted."""
    spans = [tuple(map(float, line.split())) for path in output.glob("times-*.txt") for line in path.open()]
    if not spans:
        raise BenchError(f"no run() times in {output}")
    return max(end for _, end in spans) - min(start for start, _ in spans)


def benchmark(args: argparse.Namespace) -> dict[str, object]:
    from tests.multihost_helpers import build_wheel

    work: Path = args.work.resolve()
    spec = make_component(work / "component", args.code_files, args.sleep, args.batches)
    wheels = build_wheel(fresh_dir(work / "wheels"), "bfbench", "1.0", 'VALUE = "ok"\n').parent
    env = benchlib.child_env(UV_FIND_LINKS=str(wheels), UV_OFFLINE="1", PIP_FIND_LINKS=str(wheels), PIP_NO_INDEX="1")
    store = fresh_dir(work / "store")
    results: list[dict[str, float]] = []
    with benchlib.rabbitmq(work / "rabbitmq") as url:
        with benchlib.Worker(url, "bench-warm", fresh_dir(work / "worker"), args.processes, env):
            for job in (1, 2):
                out = fresh_dir(work / "out" / f"job{job}")
                run = ["run", str(spec), "--broker", url, "--store", str(store), "--input",
                       f"data={spec.parent / 'data'}", "--output", f"out={out}", "--mini_batch_size", "1",
                       "--no-progress"]  # fmt: skip
                print(f"job {job} ...", end=" ", flush=True)
                wall = benchlib.time_cli(run, work / "logs" / f"job{job}.log", env, args.timeout)
                rows = (out / "parallel_run_step.txt").read_text().splitlines()
                if len(rows) != args.batches or any(not row.endswith(" ok") for row in rows):
                    raise BenchError(f"job {job}: unexpected output in {out}")
                results.append({"wall": wall, "batches": batch_span(out)})
                print(f"{wall:.2f} s (batches {results[-1]['batches']:.2f} s)", flush=True)
    first, second = results
    over = second["wall"] - first["batches"]
    summary: dict[str, object] = {
        "benchmark": NAME,
        "job1_seconds": round(first["wall"], 3),
        "job1_batch_seconds": round(first["batches"], 3),
        "job2_seconds": round(second["wall"], 3),
        "job2_batch_seconds": round(second["batches"], 3),
        "job2_over_job1_batches": round(over, 3),
        "target": f"job2_seconds - job1_batch_seconds < {TARGET}",
        "met": over < TARGET,
        "params": {
            "batches": args.batches,
            "sleep": args.sleep,
            "code_files": args.code_files,
            "processes": args.processes,
        },
        "machine": machine(),
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"  job 1: {first['wall']:.2f} s, of which batches {first['batches']:.2f} s (upload and build included)")
    print(f"  job 2: {second['wall']:.2f} s: {over:+.2f} s over job 1's batch time")
    print(f"  target: under {TARGET:.0f} s over ({'met' if over < TARGET else 'NOT met'})")
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = benchmark(args)
    except (BenchError, RuntimeError) as exc:
        print(f"\n{NAME}: {exc}", file=sys.stderr)
        return 1
    if args.json_out:
        args.json_out.write_text(json.dumps(summary) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
