"""W1: hash many small files; `batchfleet run` against a plain multiprocessing.Pool script.

Both sides start as fresh processes, list the same folder, read and SHA-256 every file
in mini-batches of 10 over 2 processes, and write one merged file of "<name> <sha256>"
lines in mini-batch order. The timed region is the whole command, start-up included.

    python benchmarks/w1_files.py                 # 50,000 files of 4 KiB
    python benchmarks/w1_files.py --files 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
from pathlib import Path

from common import (
    DEFAULT_CACHE,
    DEFAULT_WORK,
    BenchError,
    Side,
    batchfleet_command,
    count_lines,
    ensure_files,
    first_difference,
    fresh_dir,
    report,
    run_timed,
    warm,
)

NAME = "w1_files"
MERGED = "parallel_run_step.txt"
TARGET = 1.3

COMPONENT_YAML = """\
$schema: https://componentsdk.azureedge.net/jsonschema/ParallelComponent.json
name: batchfleet.benchmarks.w1_files
version: 0.0.1
display_name: W1 hash files
type: ParallelComponent
description: One "<name> <sha256>" line per input file.

inputs:
  files:
    type: path
    description: Folder of files to hash.
    optional: false
outputs:
  hashes:
    type: path
    description: Merged hash lines.

parallel:
  input_data: inputs.files
  output_data: outputs.hashes
  entry: hash_files.py
  args: >-
    --output {outputs.hashes}
"""

# The same reads and hashes as hash_batch() below, as a user would write them.
ENTRY_SCRIPT = '''\
"""W1 entry script: one "<name> <sha256>" line per file."""

import hashlib
import os


def init():
    pass


def run(mini_batch):
    lines = []
    for path in mini_batch:
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        lines.append(f"{os.path.basename(path)} {digest}")
    return lines
'''


def hash_batch(paths: list[str]) -> list[str]:
    """Baseline work for one mini-batch."""
    lines = []
    for path in paths:
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        lines.append(f"{os.path.basename(path)} {digest}")
    return lines


def run_baseline(input_dir: Path, merged: Path, batch: int, processes: int) -> int:
    """The plain script: list, chunk, Pool.imap (in order), write the merged file."""
    paths = sorted(entry.path for entry in os.scandir(input_dir) if entry.is_file())
    chunks = [paths[start : start + batch] for start in range(0, len(paths), batch)]
    merged.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool, merged.open("w", encoding="utf-8", newline="\n") as out:
        for lines in pool.imap(hash_batch, chunks):
            out.writelines(line + "\n" for line in lines)
    return 0


def write_component(folder: Path) -> Path:
    """The component the batchfleet side runs; alone in its folder (it is snapshotted)."""
    fresh_dir(folder)
    (folder / "hash_files.py").write_text(ENTRY_SCRIPT, encoding="utf-8")
    spec = folder / "component.yaml"
    spec.write_text(COMPONENT_YAML, encoding="utf-8")
    return spec


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000, help="number of input files (default 50000)")
    parser.add_argument("--size", type=int, default=4096, help="bytes per file (default 4096)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per side; the median is reported")
    parser.add_argument("--mini-batch-size", type=int, default=10, dest="batch")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="generated inputs (kept)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / NAME, help="component, outputs, logs")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run")
    parser.add_argument("--json-out", type=Path, help="also write the summary to this file")
    # Internal: the baseline side re-enters this script in its own process.
    parser.add_argument("--baseline", nargs=2, metavar=("INPUT", "MERGED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for flag in ("files", "size", "repeat", "batch", "processes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('batch', 'mini-batch-size')} must be at least 1")
    return args


def benchmark(args: argparse.Namespace) -> dict[str, object]:
    files = ensure_files(args.cache, args.files, args.size, seed="w1")
    work: Path = args.work.resolve()
    spec = write_component(work / "component")
    warm(files.root)
    baseline = Side("baseline", f"multiprocessing.Pool({args.processes}), spawn, imap over batches")
    ours = Side("batchfleet", "batchfleet run, embedded mode")
    baseline_cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline", str(files.root)]
    batchfleet_cmd = [*batchfleet_command(), "run", str(spec), "--input", f"files={files.root}"]
    settings = ["--mini_batch_size", str(args.batch), "--process_count_per_node", str(args.processes)]
    for attempt in range(1, args.repeat + 1):
        base_out = fresh_dir(work / "out" / "baseline")
        ours_out = fresh_dir(work / "out" / "batchfleet")
        # A fresh job store per run, so runs do not accumulate state or disk use.
        store = fresh_dir(work / "store")
        print(f"run {attempt}/{args.repeat}: baseline ...", end=" ", flush=True)
        cmd = [*baseline_cmd, str(base_out / MERGED), "--mini-batch-size", str(args.batch)]
        cmd += ["--processes", str(args.processes)]
        baseline.seconds.append(run_timed(cmd, work / "logs" / f"baseline-{attempt}.log", work, args.timeout))
        print(f"{baseline.seconds[-1]:.2f} s; batchfleet ...", end=" ", flush=True)
        cmd = [*batchfleet_cmd, "--output", f"hashes={ours_out}", "--store", str(store), *settings]
        ours.seconds.append(run_timed(cmd, work / "logs" / f"batchfleet-{attempt}.log", work, args.timeout))
        print(f"{ours.seconds[-1]:.2f} s", flush=True)
        check_outputs(base_out / MERGED, ours_out / MERGED, args.files)
    params = {"files": args.files, "file_size": args.size, "mini_batch_size": args.batch}
    params |= {"processes": args.processes, "repeat": args.repeat, "identical": True}
    summary = report(NAME, ours, baseline, params, items=args.files)
    print(f"  target: ratio <= {TARGET} ({'met' if summary['ratio'] <= TARGET else 'NOT met'})")
    return summary


def check_outputs(baseline: Path, ours: Path, expected: int) -> None:
    """Both merged files hold the same lines in the same order, one per input file."""
    if not ours.exists():
        raise BenchError(f"batchfleet wrote no merged file at {ours}")
    difference = first_difference(baseline, ours)
    if difference:
        raise BenchError(f"merged outputs differ at {difference}")
    lines = count_lines(ours)
    if lines != expected:
        raise BenchError(f"merged output has {lines} lines, expected {expected}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline:
        source, merged = (Path(value) for value in args.baseline)
        return run_baseline(source, merged, args.batch, args.processes)
    try:
        summary = benchmark(args)
    except BenchError as exc:
        print(f"\n{NAME}: {exc}", file=sys.stderr)
        return 1
    if args.json_out:
        args.json_out.write_text(json.dumps(summary) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
