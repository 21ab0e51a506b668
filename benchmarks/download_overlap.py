"""Download overlap: is each batch's download hidden behind the previous batch's run()?

moto's S3 server is started by the script behind a proxy that delays every request by --latency
seconds, so each object costs a few round trips (HEAD, GET; the measured D is printed) and a batch
of --items objects, fetched concurrently, costs about D = 4 x latency to download. run() sleeps
C = --run-seconds per batch.
Three fleet jobs (RabbitMQ, one `batchfleet worker`, local store and output), each timed as the whole
`batchfleet run` command:

  full           S3 input, run() sleeps C            the job being judged
  download-only  S3 input, run() returns at once     what downloading alone costs
  compute-only   the same files on local disk, run() sleeps C
  fixed-costs    local files, run() returns at once (start-up, planning, merge, report: in every job)

ratio = full / max(download-only, compute-only); 1.0 is perfect overlap, 2.0 none (target <= 1.25).
The same ratio without the fixed costs is printed too: with small jobs they hide a missing overlap.

    python benchmarks/download_overlap.py                       # 60 batches, D ~ C ~ 0.4 s
    python benchmarks/download_overlap.py --batches 20
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import benchlib
from benchmarks.common import DEFAULT_WORK, fresh_dir

NAME = "download_overlap"
TARGET = 1.25

ENTRY = """\
import os
import time


def run(mini_batch):
    time.sleep({seconds})
    return [os.path.basename(path) for path in mini_batch]
"""

COMPONENT = """\
name: bench.download_overlap
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60, help="mini-batches per job (default 60)")
    parser.add_argument("--items", type=int, default=4, help="objects per mini-batch (default 4)")
    parser.add_argument("--object-size", type=int, default=64 * 1024, help="bytes per object (default 64 KiB)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to every S3 request")
    parser.add_argument("--run-seconds", type=float, default=0.4, help="C: seconds run() sleeps per batch")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / NAME, help="components, inputs, outputs, logs")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per job")
    return parser.parse_args(argv)


def write_code(folder: Path, seconds: float) -> Path:
    fresh_dir(folder)
    (folder / "entry.py").write_text(ENTRY.format(seconds=seconds), encoding="utf-8")
    (folder / "component.yaml").write_text(COMPONENT, encoding="utf-8")
    return folder / "component.yaml"


def make_inputs(client: object, local: Path, args: argparse.Namespace) -> str:
    """The same objects in a bucket and in a local folder; returns the s3:// prefix."""
    fresh_dir(local)
    client.create_bucket(Bucket="overlap")  # type: ignore[attr-defined]
    for index in range(args.batches * args.items):
        name = f"obj_{index:06d}.bin"
        body = index.to_bytes(8, "big") * (args.object_size // 8)
        client.put_object(Bucket="overlap", Key=f"in/{name}", Body=body)  # type: ignore[attr-defined]
        (local / name).write_bytes(body)
    return "s3://overlap/in"


def median_download(output: Path) -> float:
    """Median download seconds per batch, from the job's processed_mini-batches.csv."""
    rows = csv.DictReader((output / "logs/sys/job_report/processed_mini-batches.csv").read_text().splitlines())
    return statistics.median(float(row["download_seconds"]) for row in rows)


def run_jobs(url: str, s3_env: dict[str, str], data: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    work: Path = args.work
    specs = {"sleep": write_code(work / "code-sleep", args.run_seconds), "noop": write_code(work / "code-noop", 0)}
    jobs = {"full": ("sleep", data["s3"]), "download-only": ("noop", data["s3"]),
            "compute-only": ("sleep", data["local"]), "fixed-costs": ("noop", data["local"])}  # fmt: skip
    times: dict[str, float] = {}
    with benchlib.Worker(url, "bench-overlap", fresh_dir(work / "worker"), args.processes, s3_env):
        for label, (code, source) in jobs.items():
            out = fresh_dir(work / "out" / label)
            cli = ["run", str(specs[code]), "--broker", url, "--store", str(fresh_dir(work / "store" / label)),
                   "--input", f"data={source}", "--output", f"out={out}", "--mini_batch_size", str(args.items),
                   "--no-progress"]  # fmt: skip
            print(f"  {label} ...", end=" ", flush=True)
            times[label] = benchlib.time_cli(cli, work / "logs" / f"{label}.log", s3_env, args.timeout)
            print(f"{times[label]:.2f} s", flush=True)
    times["download_per_batch"] = median_download(work / "out" / "download-only")
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work = args.work.resolve()
    from tests.servers import start_moto

    moto = start_moto(fresh_dir(args.work / "moto"))
    proxy = benchlib.DelayProxy(moto.server_port, args.latency)
    try:
        print(f"uploading {args.batches * args.items} objects of {args.object_size} B ...", flush=True)
        s3_prefix = make_inputs(moto.client(), args.work / "local-in", args)
        s3_env = benchlib.child_env(**moto.env, AWS_ENDPOINT_URL=proxy.url)
        with benchlib.rabbitmq(args.work / "rabbitmq") as url:
            times = run_jobs(url, s3_env, {"s3": s3_prefix, "local": str(args.work / "local-in")}, args)
    finally:
        proxy.close()
        moto.close()
    bound = max(times["download-only"], times["compute-only"])
    ratio = times["full"] / bound
    fixed = times["fixed-costs"]
    net = (times["full"] - fixed) / max(bound - fixed, 1e-9)
    print()
    print(f"{NAME}: {args.batches} batches x {args.items} objects of {args.object_size} B, "
          f"latency {args.latency:g} s/request, C {args.run_seconds:g} s, {args.processes} processes")  # fmt: skip
    print(f"  D (median download per batch, measured): {times['download_per_batch']:.2f} s")
    for label in ("full", "download-only", "compute-only", "fixed-costs"):
        print(f"  {label:<14} {times[label]:8.2f} s")
    print(f"  ratio full / max(download-only, compute-only): {ratio:.2f}   (target <= {TARGET})")
    print(f"  the same without the fixed costs: {net:.2f}")
    summary = {"benchmark": NAME, "batches": args.batches, "items": args.items, "object_size": args.object_size,
               "latency_s": args.latency, "run_s": args.run_seconds, "processes": args.processes,
               "download_per_batch_s": round(times["download_per_batch"], 3),
               "full_s": round(times["full"], 3), "download_only_s": round(times["download-only"], 3),
               "compute_only_s": round(times["compute-only"], 3), "fixed_costs_s": round(fixed, 3),
               "ratio": round(ratio, 3), "ratio_without_fixed_costs": round(net, 3)}  # fmt: skip
    benchlib.print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
