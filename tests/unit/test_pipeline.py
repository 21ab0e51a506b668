"""Pipeline YAML: loading, binding, dependency order, and end-to-end runs in embedded mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import SpecError
from coordinator.pipeline.load import load_pipeline
from tests.cli_helpers import batchfleet

AML = Path(__file__).parents[1] / "fixtures" / "aml"


def copy_pipeline(tmp_path: Path, name: str, change: Any = None) -> Path:
    """A copy of the fixture folder with one pipeline YAML changed."""
    folder = tmp_path / "aml"
    shutil.copytree(AML, folder, ignore=shutil.ignore_patterns("__pycache__"))
    path = folder / name
    if change is not None:
        doc = yaml.safe_load(path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_steps_load_in_dependency_order(tmp_path: Path) -> None:
    def reorder(doc: dict[str, Any]) -> None:
        doc["jobs"] = {"score": doc["jobs"]["score"], "prep": doc["jobs"]["prep"]}

    pipeline = load_pipeline(copy_pipeline(tmp_path, "pipeline_components.yml", reorder))
    assert [(s.name, s.kind) for s in pipeline.steps] == [("prep", "command"), ("score", "parallel")]
    assert pipeline.steps[1].after == {"prep"}
    assert pipeline.steps[1].doc["mini_batch_size"] == "4", "a step's keys override its component's"
    assert "jobs.score.compute" in pipeline.unused and "settings.default_compute" in pipeline.unused


def jobs(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["jobs"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("case", "change", "words"),
    [
        (
            "cycle",
            lambda d: jobs(d)["prep"]["inputs"].update(raw_data="${{parent.jobs.score.outputs.scores}}"),
            ["steps prep, score depend on each other in a cycle"],
        ),
        (
            "unknown step",
            lambda d: jobs(d)["score"]["inputs"].update(data="${{parent.jobs.prepare.outputs.prep_data}}"),
            ["jobs.score.inputs.data uses '${{parent.jobs.prepare.outputs.prep_data}}'", "no step is called 'prepare'"],
        ),
        (
            "unknown pipeline input",
            lambda d: jobs(d)["prep"]["inputs"].update(raw_data="${{parent.inputs.rawdata}}"),
            ["the pipeline declares no input 'rawdata'"],
        ),
        (
            "expression we cannot fill",
            lambda d: jobs(d)["prep"]["inputs"].update(raw_data="${{parent.inputs.raw.path}}"),
            ["which batchfleet cannot fill"],
        ),
        (
            "component file missing",
            lambda d: jobs(d)["prep"].update(component="./src/prep/missing.yml"),
            ["jobs.prep: component file", "missing.yml not found"],
        ),
        (
            "registered component",
            lambda d: jobs(d)["prep"].update(component="azureml:prep_data:1"),
            ["component 'azureml:prep_data:1' must be a local YAML file"],
        ),
        (
            "other job type",
            lambda d: jobs(d)["prep"].update(component=None, type="sweep"),
            ["type must be 'parallel' or 'command', got 'sweep'"],
        ),
        (
            "unknown step key",
            lambda d: jobs(d)["score"].update(mini_batch_sise="4"),
            ["unknown field 'mini_batch_sise'", "did you mean 'mini_batch_size'"],
        ),
        ("no steps", lambda d: d.update(jobs={}), ["jobs: names no step"]),
    ],
)
def test_bad_pipelines_are_one_clear_line(tmp_path: Path, case: str, change: Any, words: list[str]) -> None:
    path = copy_pipeline(tmp_path, "pipeline_components.yml", change)
    with pytest.raises(SpecError) as caught:
        load_pipeline(path)
    line = caught.value.line()
    for word in words:
        assert word in line, line
    result = batchfleet("validate", path)
    assert result.code == 2 and len(result.error_lines) == 1, result.stderr


def run_pipeline(tmp_path: Path, path: Path, *flags: str) -> Any:
    return batchfleet("run", path, "--store", tmp_path / "store", "--no-progress", *flags)


def test_command_step_feeds_parallel_step_embedded(tmp_path: Path) -> None:
    path = copy_pipeline(tmp_path, "pipeline_components.yml")
    result = run_pipeline(tmp_path, path, "--output", f"scored={tmp_path / 'out' / 'scores.txt'}")
    assert result.code == 0, result.stderr + result.stdout
    rows = (tmp_path / "out" / "scores.txt").read_text().splitlines()
    assert rows == [f"n{i:02d}.sq.txt {i * i + 100}" for i in range(12)]
    assert "step prep (command) succeeded" in result.stdout
    assert "step score (parallel, job " in result.stdout and "3/3 mini-batches" in result.stdout
    assert "not used here" in result.stderr and "jobs.score.compute" in result.stderr
    (area,) = (tmp_path / "store").glob("prep-then-score-*")
    summary = json.loads((area / "pipeline.json").read_text())
    assert [(s["name"], s["state"]) for s in summary["steps"]] == [("prep", "succeeded"), ("score", "succeeded")]
    assert "prepared 12 files" in (area / "prep" / "logs" / "std_log.txt").read_text()
    assert sorted(p.name for p in (area / "prep" / "prep_data").iterdir())[0] == "n00.sq.txt"
    assert (tmp_path / "out" / "logs" / "job_result.txt").is_file(), "the parallel step's own report"


def test_inline_steps_and_pipeline_output_folder(tmp_path: Path) -> None:
    path = copy_pipeline(tmp_path, "pipeline_inline.yml")
    result = run_pipeline(tmp_path, path, "--output", f"scored={tmp_path / 'out'}")
    assert result.code == 0, result.stderr + result.stdout
    rows = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert rows[:3] == ["n00.cube.txt 7", "n01.cube.txt 8", "n02.cube.txt 11"] and len(rows) == 12


def test_a_failed_command_step_skips_what_needs_it(tmp_path: Path) -> None:
    path = copy_pipeline(tmp_path, "pipeline_components.yml")
    (path.parent / "src" / "prep" / "prep.py").write_text("print('working')\nraise SystemExit('no raw data today')\n")
    result = run_pipeline(tmp_path, path)
    assert result.code == 1, result.stderr + result.stdout
    line = result.error_lines[0]
    assert len(result.error_lines) == 1 and "step prep failed: the command exited with code 1: no raw data" in line
    assert "prep failed, score skipped" in result.stdout


def test_a_step_refused_at_run_time_fails_the_pipeline_in_one_line(tmp_path: Path) -> None:
    path = copy_pipeline(tmp_path, "pipeline_components.yml")
    (path.parent / "src" / "prep" / "prep.py").write_text("print('writes nothing')\n")
    result = run_pipeline(tmp_path, path)
    assert result.code == 1 and len(result.error_lines) == 1, result.stderr
    assert "step score failed: input data:" in result.error_lines[0] and "holds no files" in result.error_lines[0]


def test_pipeline_inputs_from_the_command_line(tmp_path: Path) -> None:
    path = copy_pipeline(tmp_path, "pipeline_components.yml")
    data = tmp_path / "other"
    data.mkdir()
    (data / "x.txt").write_text("3\n")
    result = run_pipeline(tmp_path, path, "--input", f"raw={data}", "--input", "offset=1",
                          "--output", f"scored={tmp_path / 'o.txt'}")  # fmt: skip
    assert result.code == 0, result.stderr
    assert (tmp_path / "o.txt").read_text().splitlines() == ["x.sq.txt 10"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--input", "rows=/x"], ["--input rows: the pipeline declares no input 'rows' (declared: raw, offset)"]),
        (["--output", "out=/x"], ["--output out: the pipeline declares no output 'out'"]),
        (["--detach"], ["--detach and --resume take one parallel job, not a pipeline"]),
    ],
)
def test_bad_pipeline_flags(tmp_path: Path, flags: list[str], words: list[str]) -> None:
    result = run_pipeline(tmp_path, copy_pipeline(tmp_path, "pipeline_components.yml"), *flags)
    assert result.code == 2 and len(result.error_lines) == 1, result.stderr
    for word in words:
        assert word in result.error_lines[0]
