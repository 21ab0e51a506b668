"""Component, run and result helpers shared by the test_tabular_cli_* modules."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests.cli_helpers import Result, batchfleet

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SUMMARY = re.compile(
    r"(\d+)/(\d+) mini-batches committed, \d+ failed(?:, \d+ never ran)?; (\d+) items succeeded, (\d+) failed"
)

COMPONENT = """\
$schema: https://componentsdk.azureedge.net/jsonschema/ParallelComponent.json
name: test.tabular
version: 0.0.1
type: ParallelComponent
inputs:
  data:
    type: {input_type}
outputs:
  scored:
    type: path
parallel:
  input_data: inputs.data
  output_data: outputs.scored
  entry: entry.py
"""


def component(root: Path, entry: str, input_type: str = "path") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "entry.py").write_text(textwrap.dedent(entry))
    spec = root / "component.yaml"
    spec.write_text(COMPONENT.format(input_type=input_type))
    return spec


def run_job(tmp_path: Path, entry: str, data: str | Path, *flags: str, input_type: str = "path") -> Result:
    spec = component(tmp_path / "code", entry, input_type)
    return batchfleet(
        "run", spec, "--input", f"data={data}", "--output", f"scored={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress", "--process_count_per_node", "2", *flags,
    )  # fmt: skip


def summary(result: Result) -> tuple[int, int, int, int]:
    """(batches committed, batches total, items succeeded, items failed) from the closing line."""
    match = SUMMARY.search(result.stdout)
    assert match, result.stdout + result.stderr
    committed, total, succeeded, failed = map(int, match.groups())
    return committed, total, succeeded, failed


def assert_ok(result: Result) -> tuple[int, int, int, int]:
    assert result.code == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return summary(result)


def assert_one_line(result: Result, code: int, *needles: str) -> str:
    assert result.code == code, result.stderr + result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    for needle in needles:
        assert needle.lower() in line.lower(), line
    return line


def source_frame(rows: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype="int64"),
            "x": rng.random(rows),
            "name": [f"name-{i:05d}" for i in range(rows)],
        }
    )


def write_parquet(frame: pd.DataFrame, path: Path, row_group_rows: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_rows)
    return path


def merged(tmp_path: Path, name: str | None = None) -> Path:
    """The merged file: by default parallel_run_step.<txt|csv|parquet|jsonl> as the format names it."""
    found = [tmp_path / "out" / name] if name else sorted((tmp_path / "out").glob("parallel_run_step.*"))
    assert len(found) == 1 and found[0].is_file(), f"no single merged output in {tmp_path / 'out'}: {found}"
    return found[0]


def prepare(example: str, out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / example / "prepare.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
