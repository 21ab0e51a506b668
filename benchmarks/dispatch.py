"""Dispatch: confirmed publishing through RabbitBroker, and end-to-end no-op mini-batches with 2 processes.

1. publish: N mini-batch messages (10 item references each, as the coordinator sends them) through
   common.broker.rabbitmq.broker.RabbitBroker.publish in the coordinator's chunks, every one confirmed;
   messages/s (target >= 10,000).
2. end-to-end: a job of one-file mini-batches whose run() returns its input, 2 processes, measured
   through the in-process API (coordinator.runner.run_job: plan, publish, run, commit, merge, report),
   because the CLI adds about a second of interpreter and import start-up that has nothing to do with
   dispatch; the CLI's wall time for the embedded job is printed beside it for comparison.
   Embedded (in-process broker) and fleet (RabbitMQ, a `batchfleet worker --processes 2`); mini-batches/s
   (target >= 3,000).

    python benchmarks/dispatch.py                         # 100,000 messages; 20,000 mini-batches
    python benchmarks/dispatch.py --messages 10000 --batches 2000
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

if not __package__:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import benchlib
from benchmarks.common import DEFAULT_CACHE, DEFAULT_WORK, ensure_files, fresh_dir

NAME = "dispatch"
PUBLISH_TARGET = 10_000
E2E_TARGET = 3_000

NOOP_ENTRY = "def run(mini_batch):\n    return mini_batch\n"
NOOP_COMPONENT = """\
name: bench.dispatch
type: ParallelComponent
inputs:
  data: {type: path}
outputs:
  out: {type: path}
parallel:
  input_data: inputs.data
  output_data: outputs.out
  entry: noop.py
  args: ""
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages to publish (default 100000)")
    parser.add_argument("--batches", type=int, default=20_000, help="no-op mini-batches end to end (default 20000)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--skip-fleet", action="store_true", help="end-to-end in embedded mode only")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="generated inputs (kept)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / NAME, help="component, outputs, logs")
    return parser.parse_args(argv)


def bench_publish(url: str, count: int) -> float:
    """Seconds to publish `count` confirmed batch messages; the queue is checked, then deleted."""
    from common.broker.base import queue_names
    from common.broker.rabbitmq.broker import RabbitBroker
    from common.messages import BatchMessage, Item
    from coordinator.plan.submit import PUBLISH_CHUNK

    job = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    bodies = []
    for batch in range(count):
        items = [Item(uri=f"s3://bench/in/file_{batch * 10 + k:07d}.bin", name=f"file_{batch * 10 + k:07d}.bin",
                      size=4096) for k in range(10)]  # fmt: skip
        bodies.append(BatchMessage(job_id=job, batch_id=batch, input="data", items=items).model_dump_json().encode())
    broker = RabbitBroker(url)
    names = queue_names(job)
    try:
        broker.declare_job(job, 3)
        start = time.perf_counter()
        for first in range(0, count, PUBLISH_CHUNK):
            broker.publish(names.batches, bodies[first : first + PUBLISH_CHUNK])
        seconds = time.perf_counter() - start
        depth = broker.depth(names.batches)
        if depth != count:
            raise RuntimeError(f"published {count} messages but the queue holds {depth}")
        print(f"  publish: {count} messages of ~{len(bodies[0])} B in {seconds:.2f} s", flush=True)
    finally:
        broker.delete_job(job)
        broker.close()
    return seconds


def write_noop(folder: Path) -> Path:
    fresh_dir(folder)
    (folder / "noop.py").write_text(NOOP_ENTRY, encoding="utf-8")
    (folder / "component.yaml").write_text(NOOP_COMPONENT, encoding="utf-8")
    return folder / "component.yaml"


def bench_e2e(spec_path: Path, data: Path, work: Path, processes: int, url: str | None) -> float:
    """Seconds for run_job() of one-file no-op mini-batches; embedded when `url` is None."""
    from common.broker.factory import open_broker
    from coordinator.runner import RunOptions, run_job
    from coordinator.spec.loader import load_spec, parse_bindings, resolve

    out = fresh_dir(work / "out")
    spec = load_spec(spec_path)
    overrides = {"mini_batch_size": 1, "process_count_per_node": processes, "progress_update_timeout": 600}
    resolved = resolve(spec, parse_bindings([f"data={data}"], "input"), parse_bindings([f"out={out}"], "output"),
                       overrides)  # fmt: skip
    broker = open_broker(url)
    key = None if url is None else benchlib.BENCH_SIGNING_KEY.encode()  # the key benchlib.Worker has
    options = RunOptions(store_uri=str(fresh_dir(work / "store")), broker=broker, embedded=url is None,
                         progress=False, work_root=fresh_dir(work / "node"), signing_key=key)  # fmt: skip
    try:
        start = time.perf_counter()
        summary = run_job(spec, resolved, options)
        seconds = time.perf_counter() - start
    finally:
        broker.close()
    if summary.state != "succeeded" or summary.batches_committed != summary.batches_total:
        raise RuntimeError(f"no-op job {summary.state}: {summary.reason}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work: Path = args.work.resolve()
    files = ensure_files(args.cache, args.batches, 16, seed="noop")
    spec = write_noop(work / "component")
    env = benchlib.child_env()
    rates: dict[str, float] = {}
    with benchlib.rabbitmq(work / "rabbitmq") as url:
        publish = bench_publish(url, args.messages)
        rates["publish_msgs_per_s"] = args.messages / publish
        cli = ["run", str(spec), "--input", f"data={files.root}", "--output", f"out={fresh_dir(work / 'cli-out')}",
               "--store", str(fresh_dir(work / "cli-store")), "--mini_batch_size", "1",
               "--process_count_per_node", str(args.processes), "--no-progress"]  # fmt: skip
        cli_seconds = benchlib.time_cli(cli, work / "logs" / "cli-embedded.log", env, 3600)
        print(f"  end-to-end, embedded, CLI wall: {args.batches} mini-batches in {cli_seconds:.2f} s", flush=True)
        embedded = bench_e2e(spec, files.root, work / "embedded", args.processes, None)
        print(f"  end-to-end, embedded, in-process: {args.batches} mini-batches in {embedded:.2f} s", flush=True)
        rates["e2e_embedded_cli_batches_per_s"] = args.batches / cli_seconds
        rates["e2e_embedded_batches_per_s"] = args.batches / embedded
        if not args.skip_fleet:
            with benchlib.Worker(url, "bench-dispatch", fresh_dir(work / "worker"), args.processes, env):
                fleet = bench_e2e(spec, files.root, work / "fleet", args.processes, url)
            print(f"  end-to-end, fleet, in-process coordinator: {args.batches} mini-batches in {fleet:.2f} s")
            rates["e2e_fleet_batches_per_s"] = args.batches / fleet
    print()
    print(f"{NAME}: {args.messages} messages published, {args.batches} no-op mini-batches, {args.processes} processes")
    print(f"  publish with confirms: {rates['publish_msgs_per_s']:10.0f} msgs/s   (target >= {PUBLISH_TARGET})")
    for key, label in (("e2e_embedded_batches_per_s", "end-to-end embedded (in-process API)"),
                       ("e2e_embedded_cli_batches_per_s", "end-to-end embedded (CLI wall)"),
                       ("e2e_fleet_batches_per_s", "end-to-end fleet (in-process coordinator)")):  # fmt: skip
        if key in rates:
            print(f"  {label}: {rates[key]:10.0f} mini-batches/s   (target >= {E2E_TARGET})")
    summary = {"benchmark": NAME, "messages": args.messages, "batches": args.batches, "processes": args.processes}
    benchlib.print_summary(summary | {key: round(value, 1) for key, value in rates.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
