"""W1 in fleet mode: `batchfleet run --broker` with one worker of 2 processes against multiprocessing.Pool(2).

The same files, entry script, baseline and output check as benchmarks/w1_files.py; the batchfleet side
goes through RabbitMQ (a private node unless BATCHFLEET_BENCH_AMQP_URL is set) to a `batchfleet worker`
started before the timed runs, as a service would be. Storage is local. The timed region is the whole
`batchfleet run` command (submit, follow, merge, report), start-up included.

    python benchmarks/fleet_w1.py                     # 50,000 files of 4 KiB
    python benchmarks/fleet_w1.py --files 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import benchlib
from benchmarks.common import (
    DEFAULT_CACHE,
    DEFAULT_WORK,
    BenchError,
    Side,
    ensure_files,
    fresh_dir,
    report,
    run_timed,
    warm,
)

NAME = "fleet_w1"
TARGET = 1.6


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
    parser.add_argument("--log-level", help="the worker's and the coordinator's log level, for a timeline (in --work)")
    args = parser.parse_args(argv)
    for flag in ("files", "size", "repeat", "batch", "processes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('batch', 'mini-batch-size')} must be at least 1")
    return args


def benchmark(args: argparse.Namespace) -> dict[str, object]:
    w1 = benchlib.bench_module("w1_files")
    files = ensure_files(args.cache, args.files, args.size, seed="w1")
    work: Path = args.work.resolve()
    spec = w1.write_component(work / "component")
    warm(files.root)
    baseline = Side("baseline", f"multiprocessing.Pool({args.processes}), spawn, imap over batches")
    ours = Side("batchfleet", f"batchfleet run --broker, 1 worker x {args.processes} processes, local storage")
    env = benchlib.child_env()
    cpu: list[dict[str, float]] = []  # CPU seconds of each run: baseline, coordinator, worker, broker
    logging = ("--log-level", args.log_level) if args.log_level else ()
    with benchlib.rabbitmq(work / "rabbitmq") as url:
        with benchlib.Worker(url, "bench-w1", fresh_dir(work / "worker"), args.processes, env, logging) as worker:
            pid, broker = worker.proc.pid, benchlib.rabbit_pid()
            meter = benchlib.CpuMeter(
                worker_main=partial(benchlib.process_cpu, pid),  # intake, dispatch, reports, broker I/O
                worker=partial(benchlib.tree_cpu, pid),  # and its job's processes
                rabbitmq=partial(benchlib.tree_cpu, broker),  # 0 for BATCHFLEET_BENCH_AMQP_URL
            )
            for attempt in range(1, args.repeat + 1):
                base_out = fresh_dir(work / "out" / "baseline")
                ours_out = fresh_dir(work / "out" / "batchfleet")
                store = fresh_dir(work / "store")
                print(f"run {attempt}/{args.repeat}: baseline ...", end=" ", flush=True)
                cmd = [
                    sys.executable,
                    str(benchlib.HERE / "w1_files.py"),
                    "--baseline",
                    str(files.root),
                    str(base_out / w1.MERGED),
                ]
                cmd += ["--mini-batch-size", str(args.batch), "--processes", str(args.processes)]
                log = work / "logs" / f"baseline-{attempt}.log"
                meter.begin()
                baseline.seconds.append(run_timed(cmd, log, work, args.timeout))
                figures = {"baseline_cpu_s": meter.end("baseline")["baseline_cpu_s"]}
                print(f"{baseline.seconds[-1]:.2f} s; batchfleet (fleet) ...", end=" ", flush=True)
                run = ["run", str(spec), "--broker", url, "--store", str(store), "--input", f"files={files.root}",
                       "--output", f"hashes={ours_out}", "--mini_batch_size", str(args.batch),
                       "--no-progress", *logging]  # fmt: skip
                log = work / "logs" / f"batchfleet-{attempt}.log"
                meter.begin()
                ours.seconds.append(benchlib.time_cli(run, log, env, args.timeout))
                figures |= meter.end("coordinator")
                cpu.append(figures)
                print(f"{ours.seconds[-1]:.2f} s", flush=True)
                print("  cpu s: " + ", ".join(f"{k[:-6]} {v:.2f}" for k, v in figures.items()), flush=True)
                w1.check_outputs(base_out / w1.MERGED, ours_out / w1.MERGED, args.files)
    params = {"files": args.files, "file_size": args.size, "mini_batch_size": args.batch}
    params |= {"processes": args.processes, "repeat": args.repeat, "identical": True, "mode": "fleet"}
    summary = dict(report(NAME, ours, baseline, params, items=args.files, extra=benchlib.median_figures(cpu)))
    print(f"  target: ratio <= {TARGET} ({'met' if summary['ratio'] <= TARGET else 'NOT met'})")
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
