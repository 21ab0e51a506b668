"""Spec loading (both YAML formats), binding, argument rendering and one-line errors."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import BatchfleetError, EntryScriptError, SpecError, UsageError
from common.settings import RunSettings
from common.spec import (
    JobSpec,
    Port,
    check_entry_source,
    load_spec,
    parse_bindings,
    predefined_args,
    resolve,
)
from common.validation import describe

FIXTURES = Path(__file__).parent / "fixtures_spec"
COMPONENT = FIXTURES / "component" / "spec.yaml"
V2_JOB = FIXTURES / "v2" / "job.yaml"

Mutate = Callable[[dict[str, Any]], Any]


def one_line(exc: BatchfleetError) -> str:
    text = str(exc)
    assert "\n" not in text and "\n" not in exc.line()
    assert "Traceback" not in text
    return exc.line()


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
        ("run_max_try", 2),  # retry_settings.max_retries
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


# --- bad specs: one clear line each ---------------------------------------------------------------


def copy_case(tmp_path: Path, source: Path, mutate: Mutate, entry: str | None = None) -> Path:
    """Copy a fixture folder into tmp_path, change its YAML (or replace its text), return the YAML."""
    shutil.copytree(source.parent, tmp_path, dirs_exist_ok=True)
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    replaced = mutate(doc)
    text = replaced if isinstance(replaced, str) else yaml.safe_dump(doc, sort_keys=False)
    target = tmp_path / source.name
    target.write_text(text, encoding="utf-8")
    if entry is not None:
        spec_entry = doc["parallel"]["entry"] if "parallel" in doc else "script/" + doc["task"]["entry_script"]
        (tmp_path / spec_entry).write_text(entry, encoding="utf-8")
    return target


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
        ["job.yaml is a pipeline job", "type: parallel"],
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
        put("retry_settings", "max_retries", value=0),
        None,
        SpecError,
        ["job.yaml: retry_settings.max_retries: must be at least 1, got 0"],
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


# --- bindings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "kind", "mode"),
    [
        ("images=./data", "./data", None, None),
        ("images=./my data/with spaces", "./my data/with spaces", None, None),
        ("images=s3://bucket/prefix", "s3://bucket/prefix", None, None),
        ("images=s3://bucket/prefix:direct", "s3://bucket/prefix", None, "direct"),
        ("images=s3://bucket/rows:tabular,direct", "s3://bucket/rows", "tabular", "direct"),
        (r"images=C:\data\images", r"C:\data\images", None, None),
        (r"images=C:\data\rows:tabular", r"C:\data\rows", "tabular", None),
        (r"images=C:\my data:files,download", r"C:\my data", "files", "download"),
        ("images=rows.csv:TABULAR", "rows.csv", "tabular", None),
        ("images=/logs/2024-01-01T10:30", "/logs/2024-01-01T10:30", None, None),
        ("threshold=0.5", "0.5", None, None),
    ],
)
def test_bindings_parse(text: str, path: str, kind: str | None, mode: str | None) -> None:
    binding = parse_bindings([text], "input")["images" if text.startswith("images") else "threshold"]
    assert (binding.path, binding.kind, binding.mode) == (path, kind, mode)


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        (["images"], ["--input expects NAME=PATH, got 'images'"]),
        (["=./data"], ["--input expects NAME=PATH"]),
        (["images="], ["--input expects NAME=PATH, got 'images='"]),
        (["9lives=./data"], ["--input expects NAME=PATH"]),
        (
            ["images=./data:tabluar"],
            ["unknown suffix ':tabluar'", "use :tabular, :files, :direct or :download"],
        ),
        (["images=./data:tabular,files"], ["conflicting suffixes ':tabular,files'", "choose one kind"]),
        (["images=./a", "images=./b"], ["--input images is given twice"]),
    ],
)
def test_bad_bindings(values: list[str], fragments: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse_bindings(values, "input")
    line = one_line(caught.value)
    for fragment in fragments:
        assert fragment in line


# --- resolving ------------------------------------------------------------------------------------


def make_spec(tmp_path: Path, template: str, **extra_inputs: Port) -> JobSpec:
    """A spec with a batched `data` input, an optional `model`, and an `out` output."""
    inputs = {"data": Port(type="uri_folder"), "model": Port(type="uri_folder", optional=True)}
    return JobSpec(
        name="t",
        kind="parallel_job",
        spec_path=tmp_path / "job.yaml",
        code_dir=tmp_path,
        entry_script="entry.py",
        args_template=template,
        inputs=inputs | extra_inputs,
        outputs={"out": Port(type="uri_folder"), "extra": Port(type="uri_folder")},
        input_data=["data"],
        output_data="out",
    )


def bound(*values: str) -> dict[str, Any]:
    return parse_bindings(list(values), "input")


@pytest.mark.parametrize(
    ("template", "inputs", "expected"),
    [
        ("--data {inputs.data}", ["data=/d"], ["--data", "/d"]),
        ("--data ${{inputs.data}}", ["data=/d"], ["--data", "/d"]),
        ("--data ${{ inputs.data }}", ["data=/d"], ["--data", "/d"]),
        ("--data={inputs.data}", ["data=/d"], ["--data=/d"]),
        ("--out {outputs.out} --x ${{outputs.out}}", ["data=/d"], ["--out", "/o", "--x", "/o"]),
        ("--data {inputs.data}", ["data=/my data/in"], ["--data", "/my data/in"]),
        ("--title 'a b' {inputs.data}", ["data=/d"], ["--title", "a b", "/d"]),
        ("[--model {inputs.model}] --n 1", ["data=/d"], ["--n", "1"]),
        ("[--model {inputs.model}] --n 1", ["data=/d", "model=/m"], ["--model", "/m", "--n", "1"]),
        ("[--model ${{inputs.model}}]", ["data=/d", "model=/m x"], ["--model", "/m x"]),
        ("--keys [a,b]", ["data=/d"], ["--keys", "[a,b]"]),
        ("--extra {outputs.extra}", ["data=/d"], ["--extra", os.path.join("/o", "extra")]),
        ("--data {inputs.data}", ["data=s3://bucket/x"], ["--data", "s3://bucket/x"]),
    ],
)
def test_args_render(tmp_path: Path, template: str, inputs: list[str], expected: list[str]) -> None:
    resolved = resolve(make_spec(tmp_path, template), bound(*inputs), parse_bindings(["out=/o"], "output"), {})
    assert resolved.args == expected


def test_relative_cli_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = resolve(
        make_spec(tmp_path, "--data {inputs.data}"),
        bound("data=in put"),
        parse_bindings(["out=out"], "output"),
        {},
    )
    assert resolved.args == ["--data", str(tmp_path / "in put")]
    assert resolved.inputs["data"].uri == str(tmp_path / "in put")
    assert resolved.output_uri == str(tmp_path / "out")
    assert resolved.outputs["extra"] == str(tmp_path / "out" / "extra")


def test_resolve_component_fixture(tmp_path: Path) -> None:
    spec = load_spec(COMPONENT)
    resolved = resolve(
        spec,
        bound("trained_model=/models/m 1", "images_to_score=s3://bucket/images"),
        parse_bindings([f"scored_dataset={tmp_path}"], "output"),
        {"mini_batch_size": "5"},
    )
    assert resolved.args == ["--model", "/models/m 1", "--output", str(tmp_path)]
    assert resolved.inputs["images_to_score"].uri == "s3://bucket/images"
    assert resolved.inputs["images_to_score"].kind == "files"
    assert resolved.output_uri == str(tmp_path)
    assert resolved.settings.mini_batch_size == 5
    assert resolved.settings.output_action == "append_row"


def test_resolve_v2_fixture(tmp_path: Path) -> None:
    spec = load_spec(V2_JOB)
    out_file = tmp_path / "predictions.txt"
    resolved = resolve(spec, {}, parse_bindings([f"job_output_file={out_file}"], "output"), {"run_max_try": 4})
    folder = V2_JOB.parent.resolve()
    assert resolved.inputs["input_data"].uri == str(folder / "neural-iris-mltable")
    assert (resolved.inputs["input_data"].kind, resolved.inputs["input_data"].mode) == ("tabular", "direct")
    assert resolved.inputs["threshold"].kind == "value"
    assert resolved.args[:4] == ["--model", str(folder / "iris-model"), "--threshold", "0.5"]
    # A uri_file output names the merged file; its folder holds the rest.
    assert resolved.output_uri == tmp_path.as_posix()
    assert resolved.settings.append_row_file_name == "predictions.txt"
    assert resolved.settings.run_max_try == 4
    assert resolved.settings.run_invocation_timeout == 60


@pytest.mark.parametrize(
    ("binding", "port_type", "kind", "mode"),
    [
        ("data=/d", "uri_folder", "files", "download"),
        ("data=/d:tabular", "uri_folder", "tabular", "direct"),
        ("data=/d:direct", "uri_folder", "files", "direct"),
        ("data=/rows.parquet", "uri_file", "tabular", "direct"),
        ("data=/d", "mltable", "tabular", "direct"),
        ("data=/d", "TabularDataset", "tabular", "direct"),
        ("data=/d:files", "mltable", "files", "download"),
    ],
)
def test_input_kind_and_mode(tmp_path: Path, binding: str, port_type: str, kind: str, mode: str) -> None:
    spec = make_spec(tmp_path, "").model_copy(update={"inputs": {"data": Port(type=port_type)}})
    settings = {"mini_batch_size": "1MB" if kind == "tabular" else 2}
    resolved = resolve(spec, bound(binding), parse_bindings(["out=/o"], "output"), settings)
    assert (resolved.inputs["data"].kind, resolved.inputs["data"].mode) == (kind, mode)


BAD_RESOLVES: list[tuple[str, list[str], list[str], dict[str, object], list[str]]] = [
    (
        "unbound required input",
        [],
        ["out=/o"],
        {},
        ["input 'data' is required but not bound", "--input data=PATH"],
    ),
    ("unbound output", ["data=/d"], [], {}, ["output 'out' is not bound", "--output out=PATH"]),
    ("unknown input", ["data=/d", "dta=/x"], ["out=/o"], {}, ["--input dta: no input 'dta' is declared"]),
    ("unknown output", ["data=/d"], ["out=/o", "ot=/x"], {}, ["--output ot: no output 'ot'"]),
    (
        "mini_batch_size 0",
        ["data=/d"],
        ["out=/o"],
        {"mini_batch_size": 0},
        ["setting mini_batch_size: must be a positive file count, got 0"],
    ),
    (
        "allowed_failed_percent 101",
        ["data=/d"],
        ["out=/o"],
        {"allowed_failed_percent": "101"},
        ["setting allowed_failed_percent: must be at most 100"],
    ),
    ("unknown override", ["data=/d"], ["out=/o"], {"mini_batch": 2}, ["unknown setting 'mini_batch'"]),
    (
        "size for a file input",
        ["data=/d"],
        ["out=/o"],
        {"mini_batch_size": "10MB"},
        ["input 'data': mini_batch_size '10MB' is a data size"],
    ),
    (
        "count for a table",
        ["data=/d:tabular"],
        ["out=/o"],
        {"mini_batch_size": 10},
        ["input 'data': mini_batch_size 10 is a file count"],
    ),
    ("azure asset", ["data=azureml:iris:1"], ["out=/o"], {}, ["Azure ML asset 'azureml:iris:1'"]),
]


@pytest.mark.parametrize(
    ("inputs", "outputs", "overrides", "fragments"),
    [case[1:] for case in BAD_RESOLVES],
    ids=[case[0] for case in BAD_RESOLVES],
)
def test_bad_resolve_is_one_clear_line(
    tmp_path: Path, inputs: list[str], outputs: list[str], overrides: dict[str, object], fragments: list[str]
) -> None:
    spec = make_spec(tmp_path, "--data {inputs.data}")
    with pytest.raises(UsageError) as caught:
        resolve(spec, bound(*inputs), parse_bindings(outputs, "output"), overrides)
    line = one_line(caught.value)
    for fragment in fragments:
        assert fragment in line


def test_optional_input_outside_brackets_must_be_bound(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "--model {inputs.model}")
    with pytest.raises(UsageError) as caught:
        resolve(spec, bound("data=/d"), parse_bindings(["out=/o"], "output"), {})
    assert "input 'model' is not bound" in one_line(caught.value)
    assert "wrap it in [ ]" in caught.value.line()


def test_value_input_from_cli_and_default(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "--k {inputs.k} --name {inputs.name}", k=Port(type="integer", default=3))
    spec.inputs["name"] = Port(type="string")
    outputs = parse_bindings(["out=/o"], "output")
    resolved = resolve(spec, bound("data=/d", "name=run a"), outputs, {})
    assert resolved.args == ["--k", "3", "--name", "run a"]
    assert resolved.inputs["name"].kind == "value"
    with pytest.raises(UsageError) as caught:
        resolve(spec, bound("data=/d"), outputs, {})
    assert "pass --input name=VALUE" in one_line(caught.value)


# --- predefined arguments -------------------------------------------------------------------------


def test_predefined_args_reach_parse_known_args() -> None:
    settings = RunSettings(mini_batch_size=5, error_threshold=7, run_max_try=2, process_count_per_node=3)
    argv = [*predefined_args(settings, "score.py", ["images"]), "--model", "/m"]
    parser = argparse.ArgumentParser()
    for name in ("model", "mini_batch_size", "error_threshold", "run_max_try", "scoring_module_name"):
        parser.add_argument(f"--{name}")
    for name in ("process_count_per_node", "output_action", "input_fds", "logging_level"):
        parser.add_argument(f"--{name}")
    for name in ("allowed_failed_count", "allowed_failed_percent", "run_invocation_timeout"):
        parser.add_argument(f"--{name}")
    known, rest = parser.parse_known_args(argv)
    assert known.model == "/m"
    assert (known.mini_batch_size, known.error_threshold, known.run_max_try) == ("5", "7", "2")
    assert (known.scoring_module_name, known.input_fds, known.process_count_per_node) == (
        "score.py",
        "images",
        "3",
    )
    assert (known.output_action, known.logging_level) == ("append_row", "INFO")
    assert (known.allowed_failed_count, known.allowed_failed_percent) == ("-1", "100")
    assert known.run_invocation_timeout == "60"
    for name in ("--client_sdk_version", "--create_snapshot_at_runtime"):
        assert name in rest


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
