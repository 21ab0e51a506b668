"""The Azure ML style YAML suite in tests/fixtures/aml/: every file loads, and every job whose data
is local runs (embedded) with the result Azure ML would give."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.pipeline.command import parse_command
from coordinator.pipeline.load import load_pipeline
from coordinator.spec.loader import load_spec
from coordinator.spec.validation import is_pipeline, read_mapping
from tests.cli_helpers import Result, batchfleet

AML = Path(__file__).parents[1] / "fixtures" / "aml"
YAMLS = sorted(p.relative_to(AML).as_posix() for p in [*AML.glob("*.yml"), *AML.glob("src/*/*.yml")])


def test_the_suite_is_big_enough() -> None:
    assert len(YAMLS) >= 15, YAMLS


@pytest.mark.parametrize("name", YAMLS)
def test_every_yaml_loads(name: str) -> None:
    path = AML / name
    if is_pipeline(path):
        assert load_pipeline(path).steps
    elif read_mapping(path).get("type") == "command":
        assert parse_command(read_mapping(path), name).command
    else:
        assert load_spec(path).entry_script.endswith(".py")


def numbers(offset: int = 0, suffix: str = "") -> list[str]:
    return [f"n{i:02d}{suffix}.txt {i + offset}" for i in range(12)]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


Check = Callable[[Path, Result], None]


def ok_files(out: Path, result: Result) -> None:
    assert "12 items succeeded" in result.stdout
    assert not (out / "parallel_run_step.txt").exists(), "summary_only merges no rows"


def ok_append_row(out: Path, result: Result) -> None:
    assert lines(out / "scores.txt") == numbers(1000)


def ok_optional(out: Path, result: Result) -> None:
    assert lines(out / "scores.txt") == numbers(0)


def ok_table(out: Path, result: Result) -> None:
    rows = csv_rows(out / "scored.csv")
    assert [row["id"] for row in rows] == [str(i) for i in range(400)]
    assert len({row["rows_in_batch"] for row in rows}) > 1, "1KB / 2048 bytes cut the table into batches"


def ok_iris(out: Path, result: Result) -> None:
    rows = csv_rows(out / "iris.csv")
    assert len(rows) == 150 and "sepal_length" in rows[0]


def ok_scores(out: Path, result: Result) -> None:
    assert lines(out / "scores.txt") == numbers(0)


def ok_datastore(out: Path, result: Result) -> None:
    assert lines(out / "results" / "scores" / "numbers.txt") == numbers(0)


def ok_three_steps(out: Path, result: Result) -> None:
    (report,) = (out / "blobs" / "reports").glob("prep-score-summarize-*/report.txt")
    assert report.read_text() == f"count 12 total {sum(i * i + 1 for i in range(12))}\n"


def ok_keep_going(out: Path, result: Result) -> None:
    assert "broken failed" in result.stdout and "independent succeeded" in result.stdout
    assert "after_broken skipped" in result.stdout


# name -> (extra flags; {out} is the output folder, {aml} the fixture copy), expected exit code, check
RUNS: dict[str, tuple[list[str], int, Check]] = {
    "parallel_job_files.yml": (["--output", "job_output={out}"], 0, ok_files),
    "parallel_job_append_row.yml": (["--output", "scores={out}/scores.txt"], 0, ok_append_row),
    "parallel_job_optional_args.yml": (["--output", "scores={out}/scores.txt"], 0, ok_optional),
    "parallel_job_azure_keys.yml": (["--output", "scores={out}/scores.txt"], 0, ok_optional),
    "parallel_job_csv_table.yml": (["--output", "scored={out}/scored.csv", "--append_row_format", "csv"], 0, ok_table),
    "parallel_job_bytes_table.yml": (
        ["--output", "scored={out}/scored.csv", "--append_row_format", "csv"], 0, ok_table),
    "parallel_job_mltable.yml": (
        ["--output", "job_output_file={out}/iris.csv", "--append_row_format", "csv"], 0, ok_iris),
    "parallel_job_data_asset.yml": (
        ["--output", "scores={out}/scores.txt", "--data-assets", "{aml}/assets"], 0, ok_scores),
    "parallel_job_datastore.yml": (
        ["--datastore", "workspaceblobstore={aml}/data", "--datastore", "results={out}/results"], 0, ok_datastore),
    "pipeline_three_steps.yml": (
        ["--data-assets", "{aml}/assets", "--datastore", "workspaceblobstore={out}/blobs"], 0, ok_three_steps),
    "pipeline_mltable.yml": (["--append_row_format", "csv"], 0, lambda out, result: None),
    "pipeline_continue_on_failure.yml": ([], 1, ok_keep_going),
    "src/score/score.yml": (
        ["--input", "data={aml}/data/numbers", "--output", "scores={out}/scores.txt"], 0, ok_scores),
}  # fmt: skip


def test_every_runnable_yaml_is_run() -> None:
    assert set(RUNS) <= set(YAMLS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_yaml_runs(tmp_path: Path, name: str) -> None:
    aml = tmp_path / "aml"
    shutil.copytree(AML, aml, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out"
    flags, code, check = RUNS[name]
    filled = [flag.format(out=out, aml=aml) for flag in flags]
    result = batchfleet("run", aml / name, "--store", tmp_path / "store", "--no-progress", *filled, cwd=tmp_path)
    assert result.code == code, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    check(out, result)
