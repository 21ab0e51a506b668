"""A job's environment: read from either spec format, checked against the node, built and cached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import SpecError
from common.messages import PythonEnvironment
from coordinator.spec.environment import check_buildable, read_environment
from worker.run import environment as envmod
from worker.run.environment import (
    EnvironmentBuildError,
    ensure_environment,
    environment_key,
    python_pin_note,
    wanted,
)

CONDA = {
    "name": "project_environment",
    "channels": ["defaults"],
    "dependencies": ["psutil", "python=3.6.8", "pip", {"pip": ["torch", "azureml-defaults", "azureml-dataprep>=1.6"]}],
}


def test_inline_conda_dependencies_as_in_the_seed(tmp_path: Path) -> None:
    raw = {"docker": {"image": "mcr.microsoft.com/x"}, "conda": {"conda_dependencies": CONDA}, "os": "Linux"}
    env = read_environment(raw, tmp_path, "spec.yaml")
    assert env is not None
    assert env.requirements == ["torch"]  # Azure ML's runtime packages: batchfleet is the runtime
    assert (env.python, env.conda_only, env.image) == ("=3.6.8", ["psutil"], "mcr.microsoft.com/x")
    notes = env.notes()
    assert len(notes) == 2 and "'psutil'" in notes[0] and "mcr.microsoft.com/x is recorded, not used" in notes[1]


def test_conda_file_v2_and_requirements_file(tmp_path: Path) -> None:
    (tmp_path / "conda.yaml").write_text("dependencies:\n  - python=3.11\n  - pip:\n    - numpy>=1.2\n")
    (tmp_path / "requirements.txt").write_text("# ours\nrequests==2.0  # pinned\n\nidna\n")
    env = read_environment({"image": "img", "conda_file": "./conda.yaml"}, tmp_path, "job.yaml")
    assert env is not None and env.requirements == ["numpy>=1.2"] and env.python == "=3.11"
    assert env.source == "conda.yaml"
    env = read_environment({"requirements_file": "requirements.txt"}, tmp_path, "job.yaml")
    assert env is not None and env.requirements == ["requests==2.0", "idna"]
    env = read_environment({"conda": {"conda_dependencies_file": "conda.yaml"}}, tmp_path, "c.yaml")
    assert env is not None and env.requirements == ["numpy>=1.2"]


def test_a_missing_environment_file_is_refused_only_where_it_is_built(tmp_path: Path) -> None:
    env = read_environment({"conda_file": "nope.yaml"}, tmp_path, "spec.yaml")
    assert env is not None and env.missing == [str(tmp_path / "nope.yaml")]
    assert env.notes() == [f"environment file {tmp_path / 'nope.yaml'} does not exist"]
    check_buildable(None, "spec.yaml")
    with pytest.raises(SpecError) as caught:
        check_buildable(env, "spec.yaml")
    assert "spec.yaml: environment file" in caught.value.line() and "--environment current" in caught.value.line()


def test_nothing_to_build(tmp_path: Path) -> None:
    assert read_environment(None, tmp_path, "s") is None
    assert read_environment({"os": "Linux"}, tmp_path, "s") is None
    named = read_environment({"reference": "azureml:env@latest"}, tmp_path, "s")
    assert named is not None and not named.requirements and "azureml:env@latest" in named.source


@pytest.mark.parametrize(
    ("pin", "met"),
    [("=3.11", True), ("=3.11.7", True), ("==3.11.7", True), (">=3.10", True), (">=3.10,<3.12", True),
     ("=3.6.8", False), ("<3.11", False), (">3.11", False), ("=3", True), ("3.11.*", True), (None, True)],
)  # fmt: skip
def test_python_pins_against_the_node(pin: str | None, met: bool) -> None:
    note = python_pin_note(pin, (3, 11, 7))
    assert (note is None) == met, note
    if note is not None:
        assert "3.11.7" in note and "\n" not in note


def test_only_a_job_mode_with_requirements_builds() -> None:
    env = PythonEnvironment(requirements=["x"])
    assert wanted(env, "job") and not wanted(env, "current") and not wanted(env, None)
    assert not wanted(PythonEnvironment(image="i"), "job") and not wanted(None, "job")


def test_the_key_follows_the_requirements() -> None:
    a = environment_key(PythonEnvironment(requirements=["x==1"]))
    assert a == environment_key(PythonEnvironment(requirements=["x==1"], image="other"))
    assert a != environment_key(PythonEnvironment(requirements=["x==2"]))


def fake_steps(calls: list[list[str]], fail: bool = False):  # type: ignore[no-untyped-def]
    def run(step, stdout, **_kw):  # type: ignore[no-untyped-def]
        calls.append(step)
        stdout.write("Resolved 1 package\n" if not fail else "error: no matching distribution for nosuch\n")
        if step[1] == "venv" or step[1:3] == ["-m", "venv"]:
            Path(step[-1]).mkdir(parents=True, exist_ok=True)

        class Done:
            returncode = 1 if fail and "install" in step else 0

        return Done()

    return run


def test_built_once_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(envmod.subprocess, "run", fake_steps(calls))
    env = PythonEnvironment(requirements=["bfdep==1.0"], source="conda.yaml", image="img")
    log_file = tmp_path / "logs" / "sys" / "environment" / "node-a.txt"
    first = ensure_environment(env, tmp_path / "work", log_file)
    assert not first.cached and len(calls) == 2
    assert calls[0][1] == "venv" and calls[1][1:3] == ["pip", "install"]  # uv ships with batchfleet
    assert first.python.parent.parent.parent == tmp_path / "work" / "envs"
    assert first.site_packages and all(p.startswith(str(first.python.parent.parent)) for p in first.site_packages)
    second = ensure_environment(env, tmp_path / "work", log_file)
    assert second.cached and len(calls) == 2
    text = log_file.read_text()
    assert text.count("\nbuilt\n") == 1 and "cached:" in text and "note: docker image img" in text


def test_pip_is_the_fallback_without_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(envmod.subprocess, "run", fake_steps(calls))
    monkeypatch.setattr(envmod, "find_uv", lambda: None)
    ensure_environment(PythonEnvironment(requirements=["x"]), tmp_path / "work", tmp_path / "log.txt")
    assert calls[0] == [sys.executable, "-m", "venv", calls[0][-1]]
    assert calls[1][1:4] == ["-m", "pip", "install"]


def test_a_failed_build_keeps_nothing_and_tells_the_last_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(envmod.subprocess, "run", fake_steps(calls, fail=True))
    with pytest.raises(EnvironmentBuildError) as caught:
        ensure_environment(PythonEnvironment(requirements=["nosuch"]), tmp_path / "work", tmp_path / "log.txt")
    assert "could not build the job's environment" in caught.value.line()
    assert "no matching distribution for nosuch" in caught.value.tail
    assert not any((tmp_path / "work" / "envs").glob("*/bin"))


HOLDER = """\
import sys, time
from pathlib import Path
from filelock import FileLock

folder = Path(sys.argv[1])
with FileLock(folder.parent / f"{folder.name}.lock"):
    print("locked", flush=True)
    time.sleep(0.5)  # building, as far as anyone else can tell
    folder.mkdir(parents=True)
    (folder / sys.argv[2]).write_text("")
"""


def test_another_process_building_it_is_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes on one work root (two nodes under one id): the second waits for the first's build
    and uses it, instead of removing it as an unfinished one."""
    calls: list[list[str]] = []
    monkeypatch.setattr(envmod.subprocess, "run", fake_steps(calls))
    env = PythonEnvironment(requirements=["bfdep==1.0"])
    folder = tmp_path / "work" / "envs" / environment_key(env)
    folder.parent.mkdir(parents=True)
    command = [sys.executable, "-c", HOLDER, str(folder), envmod.COMPLETE]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        built = ensure_environment(env, tmp_path / "work", tmp_path / "log.txt")
    assert built.cached and calls == [], calls
