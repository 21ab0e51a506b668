"""Spec loading of both YAML formats (component, v2 parallel job) and the static entry-script check."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from common.errors import EntryScriptError
from coordinator.spec.loader import Port, check_entry_source, load_spec
from tests.unit.spec_helpers import COMPONENT, V2_JOB, copy_case, one_line

# --- the two formats load -------------------------------------------------------------------------


def test_component_yaml_from_the_seed_loads() -> None:
    spec = load_spec(COMPONENT)
    assert spec.kind == "component"
    assert spec.name == "microsoft.com.azureml.samples.parallel_score_image"
    assert spec.spec_path == COMPONENT.resolve()
    assert spec.code_dir == COMPONENT.parent.resolve()
    assert spec.entry_script == "score_parallel.py"
    assert spec.input_data == ["images_to_score"]
    assert spec.output_data == "scored_dataset"
    assert spec.args_template == "--model {inputs.trained_model} --output {outputs.scored_dataset}"
    assert set(spec.inputs) == {"trained_model", "images_to_score"}
    assert spec.inputs["images_to_score"] == Port(type="path", description="Images to score.")
    assert spec.outputs["scored_dataset"].type == "path"
    assert spec.environment is not None and spec.environment["os"] == "Linux"
    assert spec.environment["docker"]["image"].startswith("mcr.microsoft.com/azureml/")
    assert spec.settings == {}


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("mini_batch_size", "10kb"),
        ("allowed_failed_count", 5),  # mini_batch_error_threshold
        ("process_count_per_node", 2),  # max_concurrency_per_instance
        ("node_count", 2),  # resources.instance_count
        ("run_max_try", 3),  # retry_settings.max_retries: 2 retries after the first try
        ("run_invocation_timeout", 60),  # retry_settings.timeout
        ("logging_level", "DEBUG"),
        ("output_action", "append_row"),  # append_row_to is set
        ("error_threshold", 5),  # predefined argument in program_arguments
        ("allowed_failed_percent", 30),
        ("task_overhead_timeout", 1200),
        ("progress_update_timeout", 600),
    ],
)
def test_v2_job_settings_map_to_our_names(field: str, expected: object) -> None:
    assert load_spec(V2_JOB).settings[field] == expected


def test_v2_job_ports_and_task() -> None:
    spec = load_spec(V2_JOB)
    folder = V2_JOB.parent.resolve()
    assert spec.kind == "parallel_job"
    assert spec.name == "iris_batch_prediction"
    assert spec.code_dir == folder / "script"
    assert spec.entry_script == "iris_prediction.py"
    assert spec.input_data == ["input_data"]
    assert spec.output_data == "job_output_file"
    assert spec.inputs["input_data"].path == str(folder / "neural-iris-mltable")
    assert spec.inputs["input_data"].mode == "direct"
    assert spec.inputs["score_model"].mode == "download"
    assert spec.inputs["threshold"] == Port(type="number", default=0.5)
    assert spec.environment_variables == {"IRIS_VERBOSE": "true", "IRIS_LIMIT": "10"}
    assert spec.environment is not None and spec.environment["name"] == "prs-env"


def test_v2_job_without_append_row_to_is_summary_only(tmp_path: Path) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        del doc["task"]["append_row_to"]

    path = copy_case(tmp_path, V2_JOB, mutate)
    spec = load_spec(path)
    assert spec.settings["output_action"] == "summary_only"
    assert spec.output_data == "job_output_file"  # the only output still holds results and logs


@pytest.mark.parametrize(("retries", "tries"), [(None, 4), (0, 1), (1, 2), ("5", 6)])
def test_v2_max_retries_counts_retries(tmp_path: Path, retries: object, tries: int) -> None:
    """Azure ML v2: max_retries (default 3) counts the tries after the first one."""

    def mutate(doc: dict[str, Any]) -> None:
        if retries is None:
            del doc["retry_settings"]["max_retries"]
        else:
            doc["retry_settings"]["max_retries"] = retries

    assert load_spec(copy_case(tmp_path, V2_JOB, mutate)).settings["run_max_try"] == tries


def test_v2_keys_azure_accepts_load(tmp_path: Path) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["identity"] = {"type": "user_identity"}
        doc["resources"] |= {"shm_size": "8g", "docker_args": "--ipc=host", "instance_type": "Standard_NC6"}
        doc["task"]["type"] = "function"
        doc["mini_batch_size"] = "10KB"
        doc["task"]["program_arguments"] += " $[[--first_task_creation_timeout ${{inputs.threshold}}]]"

    spec = load_spec(copy_case(tmp_path, V2_JOB, mutate))
    assert spec.settings["mini_batch_size"] == "10KB" and spec.settings["node_count"] == 2


def test_component_run_settings_and_code_key(tmp_path: Path) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["code"] = "src"
        doc["run_settings"] = {"mini_batch_size": "3", "logging_level": "warning", "run_max_try": 1}

    path = copy_case(tmp_path, COMPONENT, mutate)
    (tmp_path / "src").mkdir()
    shutil.move(tmp_path / "score_parallel.py", tmp_path / "src" / "score_parallel.py")
    spec = load_spec(path)
    assert spec.code_dir == (tmp_path / "src").resolve()
    assert spec.settings == {"mini_batch_size": 3, "logging_level": "WARNING", "run_max_try": 1}


# --- entry script check (static, never imported) --------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "def run(mini_batch):\n    return mini_batch\n",
        "def run(mini_batch, mini_batch_context):\n    return mini_batch\n",
        "def run(mini_batch, context=None, extra=None):\n    return mini_batch\n",
        "def run(*batches):\n    return batches[0]\n",
        "from somewhere_else import run\n",
        "import sys\nif sys.platform == 'win32':\n    def run(b):\n        return b\n"
        "else:\n    def run(b):\n        return b\n",
        "raise SystemExit('importing this would exit')\ndef run(b):\n    return b\n",
    ],
    ids=["one", "two", "defaults", "varargs", "imported", "conditional", "never-imported"],
)
def test_entry_scripts_that_pass(tmp_path: Path, source: str) -> None:
    script = tmp_path / "entry.py"
    script.write_text(source, encoding="utf-8")
    check_entry_source(script)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("def run(:\n", "entry.py:1: syntax error"),
        ("x = 1\n", "has no run() function"),
        ("def run(a, b, c):\n    pass\n", "entry.py:1: run() must take 1 or 2 parameters"),
        ("def run(a, *, flag):\n    pass\n", "run() must take 1 or 2 parameters"),
        ("async def run(a):\n    return a\n", "entry.py:1: run() is async"),
        (
            "def init(model):\n    pass\ndef run(b):\n    return b\n",
            "entry.py:1: init() must take no parameters",
        ),
        (
            "def run(b):\n    def run_inner(x):\n        pass\n    return b\ndef run():\n    pass\n",
            "entry.py:5",
        ),
    ],
    ids=["syntax", "no-run", "three", "kw-only", "async", "init-args", "last-def-wins"],
)
def test_entry_scripts_that_fail(tmp_path: Path, source: str, fragment: str) -> None:
    script = tmp_path / "entry.py"
    script.write_text(source, encoding="utf-8")
    with pytest.raises(EntryScriptError) as caught:
        check_entry_source(script)
    assert fragment in one_line(caught.value)
