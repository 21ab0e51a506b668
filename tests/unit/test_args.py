"""Run settings from the command line: one flag per setting, and --set KEY=VALUE."""

from __future__ import annotations

import argparse

import pytest

from common.errors import UsageError
from common.settings import SETTING_NAMES, RunSettings
from coordinator.spec.args import add_setting_flags, collect_overrides


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="batchfleet run")
    add_setting_flags(built)
    built.add_argument("--set", dest="sets", action="append", default=[])
    return built


def overrides(*argv: str) -> dict[str, object]:
    ns = parser().parse_args(list(argv))
    return collect_overrides(ns, ns.sets)


SEED_FLAGS = [
    "mini_batch_size",
    "error_threshold",
    "allowed_failed_count",
    "allowed_failed_percent",
    "run_invocation_timeout",
    "run_max_try",
    "process_count_per_node",
    "logging_level",
    "output_action",
    "append_row_file_name",
]


@pytest.mark.parametrize("name", sorted(set(SEED_FLAGS) | set(SETTING_NAMES)))
def test_every_setting_has_a_flag_in_both_spellings(name: str) -> None:
    expected = ["7"] if name == "partition_keys" else "7"
    for flag in {f"--{name}", f"--{name.replace('_', '-')}"}:
        assert overrides(flag, "7") == {name: expected}


def test_no_flags_means_no_overrides() -> None:
    assert overrides() == {}
    ns = parser().parse_args([])
    assert all(getattr(ns, name) is None for name in SETTING_NAMES)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--mini_batch_size", "10"], {"mini_batch_size": "10"}),
        (["--mini-batch-size", "10kb"], {"mini_batch_size": "10kb"}),
        (["--error_threshold", "-1"], {"error_threshold": "-1"}),
        (["--allowed-failed-percent", "12.5"], {"allowed_failed_percent": "12.5"}),
        (["--logging_level", "debug"], {"logging_level": "debug"}),
        (["--partition_keys", "country, state"], {"partition_keys": ["country", "state"]}),
        (["--partition-keys", "[country]"], {"partition_keys": ["country"]}),
        (["--set", "run_max_try=2"], {"run_max_try": 2}),
        (["--set", "partition_keys=[country,state]"], {"partition_keys": ["country", "state"]}),
        (["--set", "mini_batch_size=10kb"], {"mini_batch_size": "10kb"}),
        (["--set", "mini_batch_size=5"], {"mini_batch_size": 5}),
        (["--set", "allowed_failed_percent=2.5"], {"allowed_failed_percent": 2.5}),
        (["--set", "progress_update_timeout=null"], {"progress_update_timeout": None}),
        (["--set", "logging_level=off"], {"logging_level": "off"}),  # text stays text, not False
        (["--set", "output_action=summary_only"], {"output_action": "summary_only"}),
        (["--set", "append_row_file_name=yes.txt"], {"append_row_file_name": "yes.txt"}),
        (["--set", "run-max-try=2"], {"run_max_try": 2}),
        (["--set", "max_retries=4"], {"run_max_try": 5}),  # v2 name: retries after the first try
        (["--set", "max_retries=0"], {"run_max_try": 1}),
        (["--set", "mini_batch_error_threshold=3"], {"allowed_failed_count": 3}),
        (["--run_max_try", "2", "--set", "run_max_try=5"], {"run_max_try": 5}),  # --set wins
        (["--set", "run_max_try=2", "--set", "run_max_try=3"], {"run_max_try": 3}),
    ],
)
def test_overrides(argv: list[str], expected: dict[str, object]) -> None:
    assert overrides(*argv) == expected


def test_overrides_validate_as_run_settings() -> None:
    found = overrides("--mini-batch-size", "10", "--allowed_failed_percent", "5", "--set", "partition_keys=[a,b]")
    settings = RunSettings.model_validate(found)
    assert (settings.mini_batch_size, settings.allowed_failed_percent) == (10, 5)
    assert settings.partition_keys == ["a", "b"]


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        (
            "run_max_tyr=2",
            ["unknown setting 'run_max_tyr' in --set run_max_tyr=2", "did you mean run_max_try"],
        ),
        ("mini_batch=5", ["unknown setting 'mini_batch'", "mini_batch_size"]),
        ("zzzz=1", ["unknown setting 'zzzz'", "settings are: mini_batch_size"]),
        ("run_max_try", ["--set expects KEY=VALUE, got 'run_max_try'"]),
        ("=2", ["--set expects KEY=VALUE"]),
        ("partition_keys=[a, b", ["cannot read the value of partition_keys"]),
    ],
)
def test_bad_set_is_one_clear_line(entry: str, fragments: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        overrides("--set", entry)
    line = caught.value.line()
    assert "\n" not in line and "\n" not in str(caught.value)
    for fragment in fragments:
        assert fragment in line


def test_help_lists_the_settings() -> None:
    text = parser().format_help()
    for name in SEED_FLAGS:
        assert f"--{name}" in text
