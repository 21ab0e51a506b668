"""Write the seed's partitioned layout (country/state folders) as small text files.

Usage: python prepare.py [--out DIR]

Creates the ten files of the seed's example twice:

- DIR/plain/country1/state1/file1.txt ...   folder levels named by position, read with
  partition_layout '{country}/{state}/*'
- DIR/hive/country=country1/state=state1/file1.txt ...   hive style, the keys in the folder names

Each file holds a few lines of readings ("<country> <state> <file> reading <n>"), so a job can
count lines as well as files. Running it again rewrites the same files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "data"

# The seed's example (ParallelComponent.txt, "Use partitioned datasets as inputs").
SEED_FILES = (
    ("country1", "state1", "file1.txt"),
    ("country1", "state1", "file2.txt"),
    ("country1", "state2", "file1.txt"),
    ("country1", "state2", "file2.txt"),
    ("country1", "state3", "file1.txt"),
    ("country1", "state4", "file1.txt"),
    ("country2", "state1", "file1.txt"),
    ("country2", "state2", "file1.txt"),
    ("country2", "state3", "file1.txt"),
    ("country2", "state3", "file2.txt"),
)


def file_text(index: int, country: str, state: str, name: str) -> str:
    """Deterministic content: 2 to 4 lines, different per file."""
    lines = 2 + index % 3
    return "".join(f"{country} {state} {name} reading {n}\n" for n in range(lines))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8", newline="\n")
    os.replace(partial, path)


def prepare(out: Path) -> tuple[Path, Path]:
    """Write both layouts under `out`; return (plain root, hive root)."""
    plain, hive = out / "plain", out / "hive"
    for index, (country, state, name) in enumerate(SEED_FILES):
        text = file_text(index, country, state, name)
        _write(plain / country / state / name, text)
        _write(hive / f"country={country}" / f"state={state}" / name, text)
    return plain, hive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    plain, hive = prepare(args.out)
    print(f"plain layout: {plain} ({len(SEED_FILES)} files, country/state/file)")
    print(f"hive layout:  {hive} ({len(SEED_FILES)} files, country=.../state=.../file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
