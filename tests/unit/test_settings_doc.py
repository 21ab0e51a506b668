"""Help that documents: every run setting's --help line and `batchfleet settings` come from the model."""

from __future__ import annotations

import json

import pytest

from batchfleet.cli import build_parser, main
from common.settings import SETTING_NAMES, RunSettings
from coordinator.spec.settings_doc import setting_docs

DOCS = {doc.name: doc for doc in setting_docs()}
NUMERIC = [name for name, field in RunSettings.model_fields.items() if "int" in str(field.annotation) or
           "float" in str(field.annotation)]  # fmt: skip


def run_help() -> str:
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    return "".join(run.format_help().split())  # argparse wraps lines (also at hyphens): compare without spaces


def test_every_setting_is_documented_in_model_order() -> None:
    assert list(DOCS) == list(SETTING_NAMES)


@pytest.mark.parametrize("name", SETTING_NAMES)
def test_each_help_line_gives_meaning_allowed_values_and_default(name: str) -> None:
    doc = DOCS[name]
    assert doc.meaning and "run setting" not in doc.meaning
    assert doc.allowed and doc.default
    line = doc.help_line()
    assert f"Allowed: {doc.allowed}." in line and f"Default: {doc.default}." in line
    assert "".join(line.split()) in run_help()


@pytest.mark.parametrize("name", NUMERIC)
def test_numbers_say_their_unit(name: str) -> None:
    assert DOCS[name].unit, name
    assert f"Unit: {DOCS[name].unit}." in DOCS[name].help_line()


@pytest.mark.parametrize(
    ("name", "allowed", "default", "unit"),
    [
        ("output_action", "one of summary_only, append_row", "append_row", ""),
        ("append_row_format", "one of text, csv, parquet, jsonl", "text", ""),
        ("run_max_try", "a whole number >= 1", "3", "tries"),
        ("allowed_failed_percent", "a number >= 0 and <= 100", "100", "percent of all mini-batches"),
        ("run_invocation_timeout", "a number > 0", "60", "seconds"),
        ("error_threshold", "a whole number >= -1", "-1", "items"),
        ("progress_update_timeout", "a number > 0", "3 x (run_invocation_timeout + task_overhead_timeout)", "seconds"),
    ],
)
def test_allowed_values_and_defaults_follow_the_model(name: str, allowed: str, default: str, unit: str) -> None:
    doc = DOCS[name]
    assert (doc.allowed, doc.default, doc.unit) == (allowed, default, unit)


def test_plain_defaults_are_the_models_own() -> None:
    defaults = RunSettings()
    for name in ("run_max_try", "error_threshold", "allowed_failed_count", "node_count", "logging_level",
                 "output_action", "append_row_format", "init_max_try", "task_overhead_timeout"):  # fmt: skip
        value = getattr(defaults, name)
        shown = str(int(value)) if isinstance(value, float) else str(value)
        assert DOCS[name].default == shown, name


def test_azure_ml_names_include_the_v2_spellings() -> None:
    assert DOCS["run_max_try"].azureml == "run_max_try"
    assert DOCS["run_max_try"].azureml_v2 == "retry_settings.max_retries"
    assert DOCS["allowed_failed_count"].azureml_v2 == "mini_batch_error_threshold"
    assert DOCS["append_row_format"].azureml == ""  # batchfleet's own


def test_settings_command_prints_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    for name in SETTING_NAMES:
        assert name in out.replace("\n", " "), name
    for header in ("Azure ML name", "batchfleet", "default", "unit", "meaning"):
        assert header in out


def test_settings_command_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(SETTING_NAMES)
    assert {row["name"]: row["default"] for row in rows}["run_max_try"] == "3"
