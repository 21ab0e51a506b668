"""Bad input: one clear line, no traceback, exit 2 for a bad spec or flag, 1 for a failed job."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import COMPONENT, ENTRY, batchfleet, make_component


def run_component(
    tmp_path: Path,
    *extra: str,
    yaml_text: str = COMPONENT,
    entry: str | None = ENTRY,
    files: int = 5,
    data: str | None = None,
):
    spec = make_component(tmp_path / "comp", yaml_text, entry, files)
    return batchfleet(
        "run",
        spec,
        "--input",
        f"data={data or (tmp_path / 'comp' / 'data')}",
        "--output",
        f"scored={tmp_path / 'out'}",
        "--store",
        tmp_path / "store",
        "--no-progress",
        *extra,
    )


def assert_one_line(result, code: int, *needles: str) -> None:
    assert result.code == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    for needle in needles:
        assert needle.lower() in line.lower(), line


CASES = [
    ("malformed yaml", {"yaml_text": "name: [unclosed\n"}, (), 2, ["yaml"]),
    ("unknown top-level field", {"yaml_text": COMPONENT + "colour: blue\n"}, (), 2, ["colour"]),
    (
        "mistyped nested field",
        {"yaml_text": COMPONENT.replace("  entry: entry.py", "  entrry: entry.py")},
        (),
        2,
        ["entrry"],
    ),
    ("missing entry script", {"entry": None}, (), 2, ["entry.py"]),
    ("entry syntax error", {"entry": "def run(mini_batch)\n    return []\n"}, (), 2, ["syntax"]),
    ("no run function", {"entry": "def init():\n    pass\n"}, (), 2, ["run"]),
    ("run with three parameters", {"entry": "def run(a, b, c):\n    return a\n"}, (), 2, ["run"]),
    ("mini_batch_size zero", {}, ("--mini_batch_size", "0"), 2, ["mini_batch_size"]),
    ("mini_batch_size negative", {}, ("--set", "mini_batch_size=-3"), 2, ["mini_batch_size"]),
    ("mini_batch_size abc", {}, ("--mini_batch_size", "abc"), 2, ["mini_batch_size"]),
    ("error_threshold below -1", {}, ("--error_threshold", "-2"), 2, ["error_threshold"]),
    (
        "allowed_failed_percent over 100",
        {},
        ("--allowed_failed_percent", "101"),
        2,
        ["allowed_failed_percent"],
    ),
    ("unknown --set key", {}, ("--set", "mini_bach_size=3"), 2, ["mini_bach_size"]),
    ("unknown flag", {}, ("--colour", "blue"), 2, ["colour"]),
    (
        "placeholder naming no input",
        {"yaml_text": COMPONENT.replace("{outputs.scored}", "{inputs.nope}")},
        (),
        2,
        ["nope"],
    ),
    ("input path missing", {"data": "/nonexistent/batchfleet/data"}, (), 2, ["/nonexistent/batchfleet/data"]),
    ("input folder empty", {"files": 0}, (), 2, ["no files"]),
    (
        "run returns None",
        {"entry": "def run(mini_batch):\n    return None\n"},
        ("--error_threshold", "0"),
        1,
        ["returned None"],
    ),
    (
        "run returns a non-sequence",
        {"entry": "def run(mini_batch):\n    return 5\n"},
        ("--allowed_failed_count", "0", "--run_max_try", "1"),
        1,
        ["returned int"],
    ),
    (
        "init raises",
        {"entry": "def init():\n    raise RuntimeError('no model here')\ndef run(b):\n    return b\n"},
        ("--set", "init_max_try=2"),
        1,
        ["init() failed", "no model here"],
    ),
]


@pytest.mark.parametrize(("name", "component", "flags", "code", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path: Path, name: str, component: dict, flags: tuple, code: int, needles: list[str]) -> None:
    result = run_component(tmp_path, *flags, **component)
    assert_one_line(result, code, *needles)


def test_missing_spec_file(tmp_path: Path) -> None:
    result = batchfleet("run", tmp_path / "nope.yaml", "--no-progress")
    assert_one_line(result, 2, "nope.yaml")


def test_output_not_writable(tmp_path: Path) -> None:
    # A regular file where a folder is needed fails for root too.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    spec = make_component(tmp_path / "comp")
    result = batchfleet(
        "run",
        spec,
        "--input",
        f"data={tmp_path / 'comp' / 'data'}",
        "--output",
        f"scored={blocker / 'out'}",
        "--store",
        tmp_path / "store",
        "--no-progress",
    )
    assert_one_line(result, 2, "not writable")
