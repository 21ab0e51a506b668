"""Bad specs, entry scripts and settings: each is one clear line, also for raw pydantic errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import BatchfleetError, EntryScriptError, SpecError
from common.settings import RunSettings
from coordinator.spec.loader import load_spec
from coordinator.spec.validation import describe
from tests.unit.spec_helpers import COMPONENT, V2_JOB, Mutate, copy_case, one_line

# --- bad specs: one clear line each ---------------------------------------------------------------


def put(*keys: str, value: object) -> Mutate:
    def mutate(doc: dict[str, Any]) -> None:
        for key in keys[:-1]:
            doc = doc[key]
        doc[keys[-1]] = value

    return mutate


def keep(doc: dict[str, Any]) -> None:
    return None


BAD_SPECS: list[tuple[str, Path, Mutate, str | None, type[BatchfleetError], list[str]]] = [
    (
        "malformed yaml",
        COMPONENT,
        lambda doc: "name: x\nparallel:\n  entry: [a, b\n",
        None,
        SpecError,
        ["spec.yaml", "YAML syntax error at line", "fix the YAML"],
    ),
    (
        "yaml tab indentation",
        V2_JOB,
        lambda doc: "type: parallel\ntask:\n\tentry_script: a.py\n",
        None,
        SpecError,
        ["job.yaml", "YAML syntax error at line 3"],
    ),
    ("not a mapping", V2_JOB, lambda doc: "- a\n- b\n", None, SpecError, ["job.yaml", "got a list"]),
    ("empty file", V2_JOB, lambda doc: "", None, SpecError, ["job.yaml", "empty file"]),
    (
        "duplicate key",
        V2_JOB,
        lambda doc: "type: parallel\ntype: parallel\n",
        None,
        SpecError,
        ["job.yaml", "line 2", "duplicate key 'type'"],
    ),
    (
        "unknown top-level field",
        COMPONENT,
        put("paralel", value={}),
        None,
        SpecError,
        ["spec.yaml: unknown field 'paralel'", "did you mean 'parallel'", "allowed: $schema, name"],
    ),
    (
        "mistyped nested field",
        COMPONENT,
        put("parallel", "entrry", value="x.py"),
        None,
        SpecError,
        [
            "unknown field 'parallel.entrry'",
            "check the spelling",
            "(allowed: input_data, output_data, entry, args)",
        ],
    ),
    (
        "renamed required field",
        V2_JOB,
        lambda doc: doc["task"].update(entry_scrip=doc["task"].pop("entry_script")),
        None,
        SpecError,
        ["job.yaml: unknown field 'task.entry_scrip'", "did you mean 'entry_script'", "(and 1 more problem)"],
    ),
    (
        "mistyped port field",
        COMPONENT,
        put("inputs", "images_to_score", "optinal", value=True),
        None,
        SpecError,
        ["unknown field 'inputs.images_to_score.optinal'", "did you mean 'optional'"],
    ),
    (
        "mistyped v2 retry field",
        V2_JOB,
        put("retry_settings", "max_retrys", value=2),
        None,
        SpecError,
        ["job.yaml: unknown field 'retry_settings.max_retrys'", "allowed: max_retries, timeout"],
    ),
    (
        "mistyped v2 task field",
        V2_JOB,
        put("task", "entry_scrpt", value="x.py"),
        None,
        SpecError,
        ["unknown field 'task.entry_scrpt'", "did you mean 'entry_script'"],
    ),
    (
        "wrong value type",
        COMPONENT,
        put("inputs", "images_to_score", "optional", value="maybe"),
        None,
        SpecError,
        ["spec.yaml: inputs.images_to_score.optional: must be true or false, got 'maybe'"],
    ),
    (
        "unknown input mode",
        V2_JOB,
        put("inputs", "input_data", "mode", value="mount"),
        None,
        SpecError,
        ["inputs.input_data.mode: must be one of 'download', 'direct'", "got 'mount'"],
    ),
    (
        "unknown type",
        V2_JOB,
        put("type", value="command"),
        None,
        SpecError,
        ["job.yaml: type must be 'ParallelComponent'", "got 'command'"],
    ),
    (
        "a pipeline",
        V2_JOB,
        put("type", value="pipeline"),
        None,
        SpecError,
        ["job.yaml is a pipeline job, not one parallel job", "batchfleet run"],
    ),
    (
        "missing entry script",
        COMPONENT,
        put("parallel", "entry", value="nope.py"),
        None,
        SpecError,
        ["spec.yaml: entry script 'nope.py' not found", "parallel.entry"],
    ),
    (
        "missing code folder",
        V2_JOB,
        put("task", "code", value="./missing"),
        None,
        SpecError,
        ["job.yaml: task.code folder", "missing does not exist"],
    ),
    (
        "entry outside code folder",
        V2_JOB,
        put("task", "entry_script", value="../job.py"),
        None,
        SpecError,
        ["task.entry_script '../job.py' is outside the code folder"],
    ),
    (
        "entry syntax error",
        COMPONENT,
        keep,
        "import os\n\ndef run(mini_batch:\n    return mini_batch\n",
        EntryScriptError,
        ["score_parallel.py:3", "syntax error"],
    ),
    (
        "entry without run",
        COMPONENT,
        keep,
        "def init():\n    pass\n",
        EntryScriptError,
        ["score_parallel.py has no run() function", "define run(mini_batch)"],
    ),
    (
        "run with 3 parameters",
        V2_JOB,
        keep,
        "def run(a, b, c):\n    return a\n",
        EntryScriptError,
        ["iris_prediction.py:1", "run() must take 1 or 2 parameters (mini_batch[, mini_batch_context])"],
    ),
    (
        "run with no parameters",
        V2_JOB,
        keep,
        "def run():\n    return []\n",
        EntryScriptError,
        ["run() must take 1 or 2 parameters"],
    ),
    (
        "mini_batch_size 0",
        V2_JOB,
        put("mini_batch_size", value=0),
        None,
        SpecError,
        ["job.yaml: mini_batch_size: must be a positive file count, got 0"],
    ),
    (
        "mini_batch_size -1",
        COMPONENT,
        put("run_settings", value={"mini_batch_size": -1}),
        None,
        SpecError,
        ["spec.yaml: run_settings.mini_batch_size: must be a positive file count, got -1"],
    ),
    (
        "mini_batch_size abc",
        V2_JOB,
        put("mini_batch_size", value="abc"),
        None,
        SpecError,
        ["job.yaml: mini_batch_size:", "'abc' is not a size"],
    ),
    (
        "error_threshold -2",
        V2_JOB,
        put("error_threshold", value=-2),
        None,
        SpecError,
        ["job.yaml: error_threshold: must be at least -1, got -2"],
    ),
    (
        "allowed_failed_percent 101",
        COMPONENT,
        put("run_settings", value={"allowed_failed_percent": 101}),
        None,
        SpecError,
        ["run_settings.allowed_failed_percent: must be at most 100, got 101"],
    ),
    (
        "v2 name reported for a mapped setting",
        V2_JOB,
        put("retry_settings", "timeout", value=0),
        None,
        SpecError,
        ["job.yaml: retry_settings.timeout: must be more than 0, got 0"],
    ),
    (
        "negative max_retries",
        V2_JOB,
        put("retry_settings", "max_retries", value=-1),
        None,
        SpecError,
        ["job.yaml: retry_settings.max_retries: must be at least 0, got -1"],
    ),
    (
        "bad setting in program arguments",
        V2_JOB,
        put("task", "program_arguments", value="--allowed_failed_percent 101"),
        None,
        SpecError,
        ["task.program_arguments --allowed_failed_percent: must be at most 100"],
    ),
    (
        "unknown run_settings key",
        COMPONENT,
        put("run_settings", value={"run_max_tries": 2}),
        None,
        SpecError,
        ["unknown field 'run_settings.run_max_tries'", "did you mean 'run_max_try'"],
    ),
    (
        "placeholder naming no input",
        COMPONENT,
        put("parallel", "args", value="--model {inputs.trained_modle}"),
        None,
        SpecError,
        ["parallel.args uses '{inputs.trained_modle}'", "no input 'trained_modle' is declared"],
    ),
    (
        "v2 placeholder naming no output",
        V2_JOB,
        put("task", "program_arguments", value="--out ${{outputs.nowhere}}"),
        None,
        SpecError,
        ["uses '${{outputs.nowhere}}'", "no output 'nowhere'", "declared outputs: job_output_file"],
    ),
    (
        "expression we cannot fill",
        V2_JOB,
        put("task", "program_arguments", value="--m ${{parent.inputs.score_model}}"),
        None,
        SpecError,
        ["'${{parent.inputs.score_model}}', which batchfleet cannot fill"],
    ),
    (
        "unbalanced quotes in args",
        COMPONENT,
        put("parallel", "args", value="--model '{inputs.trained_model}"),
        None,
        SpecError,
        ["parallel.args cannot be split into arguments", "check quotes"],
    ),
    (
        "input_data naming no input",
        COMPONENT,
        put("parallel", "input_data", value="inputs.images"),
        None,
        SpecError,
        ["parallel.input_data names 'inputs.images'", "no input 'images' is declared"],
    ),
    (
        "input_data that is not a reference",
        V2_JOB,
        put("input_data", value="./data"),
        None,
        SpecError,
        ["input_data must look like ${{inputs.NAME}}", "got './data'"],
    ),
    (
        "append_row_to naming no output",
        V2_JOB,
        put("task", "append_row_to", value="${{outputs.results}}"),
        None,
        SpecError,
        ["task.append_row_to names '${{outputs.results}}'", "no output 'results'"],
    ),
    (
        "input_data on a literal value",
        V2_JOB,
        put("input_data", value="${{inputs.threshold}}"),
        None,
        SpecError,
        ["input_data names 'threshold', a number value, not data"],
    ),
]


@pytest.mark.parametrize(
    ("source", "mutate", "entry", "error", "fragments"),
    [case[1:] for case in BAD_SPECS],
    ids=[case[0] for case in BAD_SPECS],
)
def test_bad_spec_is_one_clear_line(
    tmp_path: Path,
    source: Path,
    mutate: Mutate,
    entry: str | None,
    error: type[BatchfleetError],
    fragments: list[str],
) -> None:
    path = copy_case(tmp_path, source, mutate, entry)
    with pytest.raises(error) as caught:
        load_spec(path)
    assert type(caught.value) is error
    line = one_line(caught.value)
    for fragment in fragments:
        assert fragment in line


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "absent.yaml")
    assert "absent.yaml not found" in one_line(caught.value)


# --- describe -------------------------------------------------------------------------------------


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry: str = ""
    args: str = ""


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parallel: _Inner
    count: int = 0


@pytest.mark.parametrize(
    ("build", "where", "expected"),
    [
        (
            lambda: RunSettings.model_validate({"mini_batch_size": 0}),
            "setting",
            "setting mini_batch_size: must be a positive file count, got 0",
        ),
        (
            lambda: _Outer.model_validate({"parallel": {"entrry": "x"}}),
            "spec.yaml",
            "spec.yaml: unknown field 'parallel.entrry'; check the spelling, did you mean 'entry'? "
            "(allowed: entry, args)",
        ),
        (lambda: _Outer.model_validate({}), "spec.yaml", "spec.yaml: field 'parallel' is required"),
        (
            lambda: _Outer.model_validate({"parallel": {}, "count": "many"}),
            "spec.yaml",
            "spec.yaml: count: must be a whole number, got 'many'",
        ),
        (
            lambda: _Outer.model_validate({"parallel": {}, "count": "many", "zzz": 1}),
            "spec.yaml",
            "spec.yaml: unknown field 'zzz'; check the spelling (allowed: parallel, count) (and 1 more problem)",
        ),
    ],
)
def test_describe(build: Callable[[], object], where: str, expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        build()
    assert describe(caught.value, where) == expected
