"""B4: score a large Parquet table; `batchfleet run` against pyarrow + multiprocessing.Pool.

A generated table of at least --gb GiB in memory (an id, 16 float columns and a string column,
deterministic, cached) is scored by a fixed linear model (numpy) in 10MB mini-batches over
2 processes, both sides writing one Parquet file of (id, score) in input order:

- batchfleet: `batchfleet run` on a component whose input is bound `:tabular`, with
  append_row_format=parquet (workers read their own row groups).
- baseline: one process reads the table once with pyarrow (iter_batches of the same size) and
  scores the pieces with the same function in multiprocessing.Pool(2) (spawn), in order.

Both outputs must hold the same rows. Each worker process reports its resident-memory high-water
mark (getrusage) and the largest batch it held; the target is growth over the process's idle size
of at most 3x the batch's in-memory size plus the model.

    python benchmarks/b4_parquet.py --gb 0.2          # quick check
    python benchmarks/b4_parquet.py                   # 1 GiB
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections import deque
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_CACHE,
    DEFAULT_WORK,
    BenchError,
    Side,
    batchfleet_command,
    fresh_dir,
    report,
    run_timed,
)

NAME = "b4_parquet"
MERGED = "scores.parquet"
FEATURES = 16
ROW_GROUP_ROWS = 16384  # about 2.5 MB in memory: a 10MB batch is four row groups
TIME_TARGET = 1.3
MEMORY_FACTOR = 3

COMPONENT_YAML = """\
$schema: https://componentsdk.azureedge.net/jsonschema/ParallelComponent.json
name: batchfleet.benchmarks.b4_parquet
version: 0.0.1
display_name: B4 score a Parquet table
type: ParallelComponent
description: A fixed linear model over 16 numeric columns; one (id, score) row per input row.

inputs:
  table:
    type: path
    description: The Parquet table (bound with :tabular).
    optional: false
outputs:
  scores:
    type: path
    description: Merged (id, score) rows.

parallel:
  input_data: inputs.table
  output_data: outputs.scores
  entry: score_table.py
"""

# The scoring function both sides import, so they run literally the same code.
MODEL_MODULE = '''\
"""B4 model: a fixed linear model over the numeric columns, scored with numpy."""

import sys

import numpy as np
import pandas as pd

FEATURES = [f"f{i:02d}" for i in range(16)]
WEIGHTS = np.linspace(-1.0, 1.0, len(FEATURES))
BIAS = 0.25


def score(frame):
    z = frame[FEATURES].to_numpy(dtype=np.float64) @ WEIGHTS + BIAS
    return pd.DataFrame({"id": frame["id"].to_numpy(), "score": 1.0 / (1.0 + np.exp(-z))})


def model_bytes():
    return int(WEIGHTS.nbytes) + 8


def peak_rss():
    """This process's resident-memory high-water mark, in bytes."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return int(psutil.Process().memory_info().peak_wset)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def frame_bytes(frame):
    return int(frame.memory_usage(deep=True, index=False).sum())
'''

ENTRY_SCRIPT = '''\
"""B4 entry script: score each DataFrame mini-batch; record this process's memory."""

import json
import os
from pathlib import Path

import pyarrow.parquet  # noqa: F401  (loaded before the idle size is taken, as in the baseline)

import b4_model

stats = {}


def init():
    stats.update(pid=os.getpid(), idle_rss=b4_model.peak_rss(), max_batch_bytes=0, batches=0)


def _save():
    # Taken again at each call: the high-water mark includes the previous batch's commit.
    stats["peak_rss"] = b4_model.peak_rss()
    folder = Path(os.environ["AZUREML_BI_OUTPUT_PATH"]) / "b4_stats"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stats['pid']}.json").write_text(json.dumps(stats))


def run(mini_batch):
    _save()
    stats["max_batch_bytes"] = max(stats["max_batch_bytes"], b4_model.frame_bytes(mini_batch))
    stats["batches"] += 1
    result = b4_model.score(mini_batch)
    _save()
    return result


def shutdown():
    _save()
'''


# --- the table ------------------------------------------------------------------------------------


def chunk_table(index: int, rows: int, start: int) -> Any:
    """Row group `index`: the same values on every machine and run."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(4_000_000 + index)
    columns: dict[str, Any] = {"id": pa.array(np.arange(start, start + rows, dtype=np.int64))}
    for column in range(FEATURES):
        columns[f"f{column:02d}"] = pa.array(rng.standard_normal(rows))
    tags = np.array([f"segment-{n:04d}" for n in range(1000)])
    columns["tag"] = pa.array(tags[rng.integers(0, len(tags), rows)].tolist(), pa.string())
    return pa.table(columns)


def ensure_table(cache: Path, gb: float) -> Path:
    """Generate the table once; later calls reuse it. Size is Arrow's in-memory bytes."""
    import pyarrow.parquet as pq

    path = cache / f"b4-{gb:g}gb.parquet"
    marker = path.with_suffix(".json")
    wanted = {"gb": gb, "row_group_rows": ROW_GROUP_ROWS, "features": FEATURES, "version": 1}
    if path.exists() and marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == wanted:
        return path
    target = int(gb * 1024**3)
    print(f"generating a {gb:g} GiB Parquet table in {path} (once)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    size = rows = index = 0
    writer: Any = None
    try:
        while size < target:
            table = chunk_table(index, ROW_GROUP_ROWS, rows)
            writer = writer or pq.ParquetWriter(partial, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            size, rows, index = size + table.nbytes, rows + table.num_rows, index + 1
    finally:
        if writer is not None:
            writer.close()
    partial.replace(path)
    marker.write_text(json.dumps(wanted), encoding="utf-8")
    return path


def warm(path: Path) -> None:
    """Read the file once so neither side pays for a cold disk cache."""
    with path.open("rb") as handle:
        while handle.read(16 * 1024**2):
            pass


# --- the baseline (runs in its own process: this script with --baseline) --------------------------


# One Pool worker's figures (each spawned worker has its own copy of this module).
_STATS: dict[str, int] = {}


def _worker_init() -> None:
    import b4_model  # type: ignore[import-not-found]
    import pyarrow.parquet  # noqa: F401  (as the batchfleet side: loaded before the idle size)

    _STATS.update(idle_rss=b4_model.peak_rss(), max_batch_bytes=0, batches=0)


def _score_piece(piece: Any) -> tuple[Any, dict[str, int]]:
    import os

    import b4_model  # type: ignore[import-not-found]

    frame = piece.to_pandas()
    _STATS["max_batch_bytes"] = max(_STATS["max_batch_bytes"], b4_model.frame_bytes(frame))
    _STATS["batches"] += 1
    result = b4_model.score(frame)
    del frame
    return result, {**_STATS, "pid": os.getpid(), "peak_rss": b4_model.peak_rss()}


def run_baseline(table: Path, merged: Path, code: Path, batch_bytes: int, processes: int) -> int:
    """Read the table once, score the pieces in a Pool in order, write one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(code))  # spawned workers inherit it and import the same b4_model
    source = pq.ParquetFile(table)
    meta = source.metadata
    # Whole row groups per piece, as many as fit batch_bytes once decoded, as batchfleet's
    # planner cuts them (the row groups are all alike).
    groups = max(1, batch_bytes // max(source.read_row_group(0).nbytes, 1))
    rows = groups * meta.row_group(0).num_rows
    stats: dict[int, dict[str, int]] = {}
    merged.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    writer: Any = None
    with context.Pool(processes, initializer=_worker_init) as pool:
        pending: deque[Any] = deque()
        # A bounded window keeps the reader from queueing the whole table in memory.
        for piece in source.iter_batches(batch_size=rows):
            pending.append(pool.apply_async(_score_piece, (piece,)))
            if len(pending) >= 2 * processes:
                writer = _write(pending.popleft().get(), writer, merged, stats, pa, pq)
        while pending:
            writer = _write(pending.popleft().get(), writer, merged, stats, pa, pq)
    if writer is not None:
        writer.close()
    import b4_model  # type: ignore[import-not-found]

    # The reader decodes the Parquet here, not in the workers: its memory is reported beside theirs.
    figures = {"workers": list(stats.values()), "reader_peak_rss": b4_model.peak_rss()}
    (merged.parent / "b4_stats.json").write_text(json.dumps(figures), encoding="utf-8")
    return 0


def _write(done: tuple[Any, dict[str, int]], writer: Any, merged: Path, stats: dict[int, dict[str, int]],
           pa: Any, pq: Any) -> Any:  # fmt: skip
    result, worker = done
    stats[worker["pid"]] = worker
    table = pa.Table.from_pandas(result, preserve_index=False)
    writer = writer or pq.ParquetWriter(merged, table.schema)
    writer.write_table(table)
    return writer


# --- checks and figures -------------------------------------------------------------------------------


def check_outputs(baseline: Path, ours: Path, expected_rows: int) -> None:
    """Same row count as the input on both sides, and the same ids and scores in the same order."""
    import numpy as np
    import pyarrow.parquet as pq

    if not ours.exists():
        raise BenchError(f"batchfleet wrote no merged file at {ours}")
    counts = {side: pq.ParquetFile(path).metadata.num_rows for side, path in (("baseline", baseline),
                                                                             ("batchfleet", ours))}  # fmt: skip
    if set(counts.values()) != {expected_rows}:
        raise BenchError(f"row counts differ: {counts}, input {expected_rows}")
    for column in ("id", "score"):
        left = pq.read_table(baseline, columns=[column]).column(0).to_numpy()
        right = pq.read_table(ours, columns=[column]).column(0).to_numpy()
        # BLAS may round the last bit differently for another piece length; ids must match exactly.
        same = np.array_equal(left, right) if column == "id" else np.allclose(left, right, rtol=1e-12, atol=0)
        if not same:
            first = int(np.argmax(~np.isclose(left, right, rtol=1e-12, atol=0)))
            raise BenchError(f"column {column} differs first at row {first}: {left[first]} vs {right[first]}")


def memory_figures(workers: list[dict[str, int]], model: int) -> dict[str, Any]:
    """The worst worker's peak, growth over its idle size, and the target for its largest batch."""
    if not workers:
        raise BenchError("no worker reported its memory")
    worst = max(workers, key=lambda w: w["peak_rss"] - w["idle_rss"])
    batch = max(w["max_batch_bytes"] for w in workers)
    target = MEMORY_FACTOR * batch + model
    growth = worst["peak_rss"] - worst["idle_rss"]
    return {
        "workers": len(workers),
        "peak_rss_mb": round(max(w["peak_rss"] for w in workers) / 1024**2, 1),
        "idle_rss_mb": round(worst["idle_rss"] / 1024**2, 1),
        "growth_mb": round(growth / 1024**2, 1),
        "batch_mb": round(batch / 1024**2, 2),
        "target_mb": round(target / 1024**2, 1),
        "within_target": growth <= target,
    }


def load_worker_stats(folder: Path) -> list[dict[str, int]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]


def print_memory(label: str, figures: dict[str, Any]) -> None:
    verdict = "within" if figures["within_target"] else "OVER"
    print(
        f"  {label:<10}  peak RSS {figures['peak_rss_mb']:7.1f} MB per worker (idle {figures['idle_rss_mb']:.1f} MB); "
        f"growth {figures['growth_mb']:.1f} MB vs target {figures['target_mb']:.1f} MB "
        f"(3 x {figures['batch_mb']:.2f} MB batch + model): {verdict}"
    )


# --- driver -------------------------------------------------------------------------------------------


def write_component(folder: Path) -> Path:
    """The component and the shared model module; alone in their folder (it is snapshotted)."""
    fresh_dir(folder)
    (folder / "b4_model.py").write_text(MODEL_MODULE, encoding="utf-8")
    (folder / "score_table.py").write_text(ENTRY_SCRIPT, encoding="utf-8")
    spec = folder / "component.yaml"
    spec.write_text(COMPONENT_YAML, encoding="utf-8")
    return spec


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="table size in GiB, in memory (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per side; the median is reported")
    parser.add_argument("--mini-batch-size", default="10MB", dest="batch", help="batch size (default 10MB)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="generated table (kept)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK / NAME, help="component, outputs, logs")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run")
    parser.add_argument("--json-out", type=Path, help="also write the summary to this file")
    parser.add_argument(
        "--arrow-pool", choices=["default", "jemalloc", "mimalloc", "system"], default="default",
        help="Arrow memory pool for both sides (ARROW_DEFAULT_MEMORY_POOL); it changes the RSS figures",
    )  # fmt: skip
    # Internal: the baseline side re-enters this script in its own process.
    parser.add_argument("--baseline", nargs=3, metavar=("TABLE", "MERGED", "CODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gb <= 0 or args.repeat < 1 or args.processes < 1:
        parser.error("--gb must be positive, --repeat and --processes at least 1")
    args.batch_bytes = parse_bytes(args.batch, parser)
    return args


def parse_bytes(text: str, parser: argparse.ArgumentParser) -> int:
    """'10MB' -> bytes, 1024-based like mini_batch_size."""
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "B": 1}
    clean = text.strip().upper()
    for unit, factor in units.items():
        if clean.endswith(unit) and clean[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(clean[: -len(unit)]) * factor)
    parser.error(f"--mini-batch-size {text!r} must be a size such as 10MB")
    raise AssertionError("unreachable")


def one_round(args: argparse.Namespace, table: Path, spec: Path, attempt: int) -> tuple[float, float, Path]:
    """One timed run of each side; returns (baseline seconds, batchfleet seconds, work folder)."""
    work: Path = args.work
    base_out = fresh_dir(work / "out" / "baseline")
    ours_out = fresh_dir(work / "out" / "batchfleet")
    store = fresh_dir(work / "store")  # a fresh job store per run: no state or disk use piles up
    print(f"run {attempt}/{args.repeat}: baseline ...", end=" ", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline", str(table), str(base_out / MERGED),
           str(spec.parent), "--mini-batch-size", args.batch, "--processes", str(args.processes)]  # fmt: skip
    baseline = run_timed(cmd, work / "logs" / f"baseline-{attempt}.log", work, args.timeout)
    print(f"{baseline:.2f} s; batchfleet ...", end=" ", flush=True)
    cmd = [*batchfleet_command(), "run", str(spec), "--input", f"table={table}:tabular",
           "--output", f"scores={ours_out}", "--store", str(store), "--no-progress",
           "--mini_batch_size", args.batch, "--process_count_per_node", str(args.processes),
           "--set", "append_row_format=parquet", "--set", f"append_row_file_name={MERGED}"]  # fmt: skip
    ours = run_timed(cmd, work / "logs" / f"batchfleet-{attempt}.log", work, args.timeout)
    print(f"{ours:.2f} s", flush=True)
    return baseline, ours, work / "out"


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.parquet as pq

    args.work = args.work.resolve()
    if args.arrow_pool != "default":
        # Inherited by both sides' processes, spawned workers included.
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = args.arrow_pool
    table = ensure_table(args.cache.resolve(), args.gb)
    meta = pq.ParquetFile(table).metadata
    spec = write_component(args.work / "component")
    warm(table)
    baseline = Side("baseline", f"pyarrow iter_batches + multiprocessing.Pool({args.processes}), spawn")
    ours = Side("batchfleet", "batchfleet run, embedded mode, :tabular, append_row_format=parquet")
    memory: dict[str, dict[str, Any]] = {}
    model = FEATURES * 8 + 8
    for attempt in range(1, args.repeat + 1):
        base_s, ours_s, out = one_round(args, table, spec, attempt)
        baseline.seconds.append(base_s)
        ours.seconds.append(ours_s)
        check_outputs(out / "baseline" / MERGED, out / "batchfleet" / MERGED, meta.num_rows)
        base_stats = json.loads((out / "baseline" / "b4_stats.json").read_text(encoding="utf-8"))
        memory["baseline"] = memory_figures(base_stats["workers"], model)
        memory["baseline"]["reader_peak_rss_mb"] = round(base_stats["reader_peak_rss"] / 1024**2, 1)
        memory["batchfleet"] = memory_figures(load_worker_stats(out / "batchfleet" / "b4_stats"), model)
    params: dict[str, Any] = {"gb": args.gb, "rows": meta.num_rows, "file_mb": round(table.stat().st_size / 1024**2)}
    params |= {"mini_batch_size": args.batch, "processes": args.processes, "repeat": args.repeat}
    params |= {"same_rows": True, "arrow_pool": args.arrow_pool}
    summary = report(NAME, ours, baseline, params, items=meta.num_rows)
    ratio = summary["ratio"]
    print(f"  time target: ratio <= {TIME_TARGET}: {'met' if ratio <= TIME_TARGET else 'NOT met'}")
    for label in ("baseline", "batchfleet"):
        print_memory(label, memory[label])
    print(f"  (the baseline's reader process, which decodes the Parquet, peaked at "
          f"{memory['baseline']['reader_peak_rss_mb']:.1f} MB)")  # fmt: skip
    summary["memory"] = memory
    summary["time_target_met"] = ratio <= TIME_TARGET
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline:
        table, merged, code = (Path(value) for value in args.baseline)
        return run_baseline(table, merged, code, args.batch_bytes, args.processes)
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
