"""Run the batchfleet CLI as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

COMPONENT = """\
$schema: https://componentsdk.azureedge.net/jsonschema/ParallelComponent.json
name: test.component
version: 0.0.1
display_name: Test component
type: ParallelComponent
inputs:
  data:
    type: path
    optional: false
  model:
    type: path
    optional: true
outputs:
  scored:
    type: path
environment:
  os: Linux
parallel:
  input_data: inputs.data
  output_data: outputs.scored
  entry: entry.py
  args: >-
    --output {outputs.scored}
"""

ENTRY = """\
import argparse, os

def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="output")
    args, _ = parser.parse_known_args()

def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("batchfleet: error:")]


def batchfleet(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 180
) -> Result:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("BATCHFLEET_BROKER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "batchfleet", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def make_component(root: Path, yaml_text: str = COMPONENT, entry: str | None = ENTRY, files: int = 5) -> Path:
    """A component folder with data; returns the spec path."""
    root.mkdir(parents=True, exist_ok=True)
    spec = root / "component.yaml"
    spec.write_text(yaml_text)
    if entry is not None:
        (root / "entry.py").write_text(textwrap.dedent(entry))
    data = root / "data"
    data.mkdir(exist_ok=True)
    for i in range(files):
        (data / f"item{i:03d}.txt").write_text(f"{i}\n")
    return spec
