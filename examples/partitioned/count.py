"""Entry script: count the files and lines of each partition of a partitioned input.

With partition_keys set, every mini-batch holds exactly one partition (one distinct combination
of key values), and run() gets a second argument, mini_batch_context, whose
partition_key_value names that partition, e.g. {"country": "country1", "state": "state2"}.

run() returns one line per file, "country=country1 state=state2 files=2 lines=6 state2/file1.txt":
the partition's key values, its file count and line count, then the file. Returning a single
line per partition would not do: as in Azure ML, run() returns one element per item it
processed, and a shorter list counts the remaining files as failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def run(mini_batch: list[str], mini_batch_context: Any) -> list[str]:
    keys = mini_batch_context.partition_key_value
    if not keys:
        raise ValueError("no partition keys: run this component with --set partition_keys=[country,state]")
    files = [Path(path) for path in mini_batch]
    total = sum(_lines(path) for path in files)
    label = " ".join(f"{key}={value}" for key, value in keys.items())
    # The file's own folder and name: file names repeat across partitions (file1.txt).
    return [f"{label} files={len(files)} lines={total} {path.parent.name}/{path.name}" for path in files]
