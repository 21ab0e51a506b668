"""Secure by default: a fleet member without a key refuses to start; passwords stay off command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchfleet.commands.trust import store_roots, with_password, with_password_file
from common.errors import UsageError
from tests.cli_helpers import batchfleet, make_component

CLOSED = "amqp://bf:pw@127.0.0.1:1/"  # never reached: the refusal comes first
NO_KEY = {"BATCHFLEET_SIGNING_KEY": "", "BATCHFLEET_SIGNING_KEY_FILE": "", "BATCHFLEET_INSECURE": ""}


def one_line(result, code: int, *needles: str) -> str:  # type: ignore[no-untyped-def]
    assert result.code == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("batchfleet: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["worker", "run", "coordinator", "submit", "follow"])
def test_a_fleet_member_without_a_key_refuses_to_start(tmp_path: Path, command: str) -> None:
    spec = make_component(tmp_path / "comp")
    args: dict[str, list[str | Path]] = {
        "worker": [],
        "run": [spec, "--input", f"data={tmp_path / 'comp' / 'data'}", "--output", f"scored={tmp_path / 'o'}"],
        "coordinator": [],
        "submit": [spec, "--input", f"data={tmp_path / 'comp' / 'data'}", "--output", f"scored={tmp_path / 'o'}"],
        "follow": ["some-job"],
    }
    result = batchfleet(command, *args[command], "--broker", CLOSED, env=NO_KEY, timeout=60)
    line = one_line(result, 2, "on a fleet needs a signing key", "--signing-key-file", "--insecure")
    assert "pw" not in line


def test_embedded_mode_needs_no_key(tmp_path: Path) -> None:
    spec = make_component(tmp_path / "comp")
    data, out = f"data={tmp_path / 'comp' / 'data'}", f"scored={tmp_path / 'o'}"
    result = batchfleet(
        "run", spec, "--input", data, "--output", out, "--store", tmp_path / "s", "--no-progress", env=NO_KEY
    )
    assert result.code == 0, result.stderr
    assert "signing key" not in result.stderr


@pytest.mark.parametrize("how", [["--insecure"], []])
def test_insecure_is_said_once_at_start(tmp_path: Path, how: list[str]) -> None:
    env = {**NO_KEY, "BATCHFLEET_INSECURE": "" if how else "1"}
    result = batchfleet("worker", "--broker", CLOSED, *how, "--work-dir", tmp_path / "w", env=env, timeout=60)
    assert result.code == 1, result.stderr  # it started, then could not reach the broker
    assert result.stderr.count("runs without a signing key (--insecure)") == 1, result.stderr
    assert "cannot reach RabbitMQ" in result.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BATCHFLEET_INSECURE": "maybe"}, "$BATCHFLEET_INSECURE is 'maybe'"),
        ({"BATCHFLEET_SIGNING_KEY": "short"}, "at least 16 are needed"),
        ({"BATCHFLEET_BROKER_PASSWORD_FILE": "/nonexistent/pw"}, "cannot read the broker password file"),
    ],
)
def test_bad_trust_settings_are_one_line(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    env = {**NO_KEY, "BATCHFLEET_SIGNING_KEY": "a-fleet-key-of-24-bytes!", **env}
    result = batchfleet("worker", "--broker", "amqp://bf@127.0.0.1:1/", "--work-dir", tmp_path / "w", env=env)
    one_line(result, 2, needle)


def test_store_allow_needs_a_bucket(tmp_path: Path) -> None:
    result = batchfleet("worker", "--broker", CLOSED, "--insecure", "--store-allow", "s3://", env=NO_KEY, timeout=60)
    one_line(result, 2, "names no bucket")


def test_a_password_on_the_command_line_is_warned_about(tmp_path: Path) -> None:
    result = batchfleet("worker", "--broker", "amqp://bf:hunter22pw@127.0.0.1:1/", "--insecure",
                        "--work-dir", tmp_path / "w", env=NO_KEY, timeout=60)  # fmt: skip
    assert "the broker password given with --broker is visible to every user" in result.stderr
    assert "hunter22pw" not in result.stderr
    env = {**os.environ, **NO_KEY, "BATCHFLEET_BROKER": "amqp://bf:hunter22pw@127.0.0.1:1/"}
    argv = [sys.executable, "-m", "batchfleet", "worker", "--insecure", "--work-dir", str(tmp_path / "w")]
    from_env = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert from_env.returncode == 1 and "cannot reach RabbitMQ" in from_env.stderr, from_env.stderr
    assert "is visible" not in from_env.stderr and "hunter22pw" not in from_env.stderr


def test_the_password_file_fills_in_the_url(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p@ss/w:rd\n")
    env = {"BATCHFLEET_BROKER_PASSWORD_FILE": str(secret)}
    assert with_password_file("amqps://bf@rabbit:5671/vh", env) == "amqps://bf:p%40ss%2Fw%3Ard@rabbit:5671/vh"
    cluster = "amqp://bf@h1/,amqp://bf@h2/"
    assert with_password_file(cluster, env) == "amqp://bf:p%40ss%2Fw%3Ard@h1/,amqp://bf:p%40ss%2Fw%3Ard@h2/"
    assert with_password_file("amqp://bf:x@h/", {}) == "amqp://bf:x@h/"
    assert with_password_file(None, env) is None
    with pytest.raises(UsageError, match="already holds a password"):
        with_password("amqp://bf:x@h/", "y")
    with pytest.raises(UsageError, match="names no user"):
        with_password("amqp://h/", "y")


def test_store_roots_default_to_the_store(tmp_path: Path) -> None:
    assert store_roots(None, "s3://b/store/") == ("s3://b/store",)
    assert store_roots([["s3://a/x", str(tmp_path / "s" / ".." / "t")]], "ignored") == ("s3://a/x", str(tmp_path / "t"))
    with pytest.raises(UsageError, match="unsupported scheme"):
        store_roots([["gs://b/x"]], "s3://b")


def test_an_embedded_run_with_the_fleet_key_in_its_environment_runs(tmp_path: Path) -> None:
    """A key in the environment (a fleet user's shell) signs the job; its local code folder runs in
    place without a snapshot hash, so the in-process node must not refuse it."""
    spec = make_component(tmp_path / "code", files=3)
    result = batchfleet(
        "run", spec, "--input", f"data={tmp_path / 'code' / 'data'}", "--output", f"scored={tmp_path / 'out'}",
        "--store", tmp_path / "store", "--no-progress", env={"BATCHFLEET_SIGNING_KEY": "k" * 32},
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert len((tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()) == 3
