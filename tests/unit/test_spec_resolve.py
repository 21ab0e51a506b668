"""CLI bindings, resolving a spec with them into arguments and settings, and predefined arguments."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from common.errors import UsageError
from common.settings import RunSettings, predefined_args
from coordinator.spec.loader import JobSpec, Port, load_spec, parse_bindings, resolve
from tests.unit.spec_helpers import COMPONENT, V2_JOB, one_line

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
        ("$[[--model ${{inputs.model}}]] --n 1", ["data=/d"], ["--n", "1"]),
        ("--n 1 $[[--model ${{inputs.model}}]]", ["data=/d", "model=/m"], ["--n", "1", "--model", "/m"]),
        ("$[[--model ${{inputs.model}} --deep]]$[[--verbose]]", ["data=/d"], ["--verbose"]),
        ("$[[--data ${{inputs.data}}]] $[[--model ${{inputs.model}}]]", ["data=/d"], ["--data", "/d"]),
    ],
)
def test_args_render(tmp_path: Path, template: str, inputs: list[str], expected: list[str]) -> None:
    resolved = resolve(make_spec(tmp_path, template), bound(*inputs), parse_bindings(["out=/o"], "output"), {})
    assert resolved.args == expected


@pytest.mark.parametrize(("size", "expected"), [("1024", 1024), (2048, 2048), ("10kb", 10240), ("10 KB", 10240)])
def test_table_batch_size_bare_number_is_bytes(tmp_path: Path, size: object, expected: int) -> None:
    spec = make_spec(tmp_path, "")
    resolved = resolve(spec, bound("data=/d:tabular"), parse_bindings(["out=/o"], "output"), {"mini_batch_size": size})
    assert resolved.settings.bytes_per_batch() == expected


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
    ("azure asset", ["data=azureml:iris:1"], ["out=/o"], {}, ["Azure ML data asset 'iris'", "--data-assets"]),
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


def test_the_sdk_version_a_script_sees_is_the_installed_one() -> None:
    from importlib import metadata

    from common.settings import RunSettings, predefined_args

    args = predefined_args(RunSettings(), "score.py", ["images"])
    version = args[args.index("--client_sdk_version") + 1]
    assert version == metadata.version("batchfleet")  # packaging reads the same literal (pyproject.toml)
