"""A pipeline's command step: its YAML, and one run in a child process with its inputs and outputs
bound as for a parallel step (remote data is downloaded first and outputs uploaded after)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from common.errors import SpecError, UsageError
from common.redact import without_own_secrets
from common.storage import StorageOptions, is_remote, join_uri, open_storage
from coordinator.spec.args import render_command
from coordinator.spec.validation import Ports, RawPort, Section, parse_section

_VALUE_TYPES = {"string", "str", "integer", "int", "number", "float", "boolean", "bool", "enum"}


class LimitsDoc(Section):
    timeout: float | None = Field(default=None, gt=0, description="Seconds the command may run.")


class CommandDoc(Section):
    """An Azure ML v2 command job or command component."""

    schema_: str | None = Field(default=None, alias="$schema")
    type: Literal["command"] = "command"
    name: str | None = None
    version: Any = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None
    is_deterministic: bool | None = None
    experiment_name: str | None = None
    compute: str | None = None
    inputs: Ports = {}
    outputs: Ports = {}
    code: str | None = None
    command: str
    environment: dict[str, Any] | str | None = None
    environment_variables: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    limits: LimitsDoc | None = None
    distribution: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    services: dict[str, Any] | None = None
    queue_settings: dict[str, Any] | None = None


def parse_command(doc: dict[str, Any], where: str) -> CommandDoc:
    return parse_section(CommandDoc, doc, where)


def is_value(port: RawPort) -> bool:
    return port.type.lower() in _VALUE_TYPES


@dataclass
class CommandResult:
    state: Literal["succeeded", "failed"]
    reason: str | None
    seconds: float
    log_uri: str


def code_folder(doc: CommandDoc, source: Path, where: str) -> Path:
    if doc.code is None:
        return source.parent
    if "://" in doc.code or doc.code.startswith("azureml:"):
        raise SpecError(f"{where}: code '{doc.code}' must be a local folder")
    folder = Path(os.path.abspath(source.parent / doc.code))
    if not folder.is_dir():
        raise SpecError(f"{where}: code folder {folder} does not exist", "it is relative to the YAML file")
    return folder


def run_command(
    doc: CommandDoc,
    code_dir: Path,
    inputs: dict[str, str],
    outputs: dict[str, str],
    log_uri: str,
    options: StorageOptions,
) -> CommandResult:
    """Run the command once; `inputs` and `outputs` map each bound port to its value or location."""
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bf-command-") as tmp:
        scratch = Path(tmp)
        local_in = {name: _local_input(doc.inputs[name], uri, scratch / "in" / name, options)
                    for name, uri in inputs.items()}  # fmt: skip
        local_out = {
            name: _local_output(doc.outputs[name], uri, scratch / "out" / name) for name, uri in outputs.items()
        }
        values = {("inputs", n): v for n, v in local_in.items()} | {("outputs", n): v for n, v in local_out.items()}
        line = render_command(" ".join(doc.command.split("\n")), values, _quote)
        log_path = scratch / "std_log.txt"
        code, reason = _execute(line, code_dir, _environment(doc), log_path, doc.limits)
        if code == 0:
            for name, uri in outputs.items():
                _publish_output(Path(local_out[name]), uri, options)
        storage = open_storage(log_uri, options)
        storage.write_bytes(log_uri, log_path.read_bytes() if log_path.exists() else b"")
    state: Literal["succeeded", "failed"] = "succeeded" if code == 0 else "failed"
    return CommandResult(state, reason, time.time() - started, log_uri)


def _quote(value: str) -> str:
    return shlex.quote(value) if os.name != "nt" else subprocess.list2cmdline([value])


def _environment(doc: CommandDoc) -> dict[str, str]:
    # User code: this process's environment minus batchfleet's own secrets (key, broker URL, ...).
    env = without_own_secrets(os.environ)
    env.update({k: "" if v is None else str(v) for k, v in (doc.environment_variables or {}).items()})
    # `python` in a command means the interpreter batchfleet runs on, with the same packages.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _execute(
    line: str, code_dir: Path, env: dict[str, str], log_path: Path, limits: LimitsDoc | None
) -> tuple[int, str | None]:
    shell = ["/bin/sh", "-c", line] if os.name != "nt" else ["cmd", "/c", line]
    timeout = limits.timeout if limits else None
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run(
                shell, cwd=code_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return 124, f"the command ran over limits.timeout={timeout:g}s and was stopped"
        except OSError as exc:
            return 127, f"cannot start the command: {exc.strerror or exc}"
    if proc.returncode == 0:
        return 0, None
    tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
    return proc.returncode, f"the command exited with code {proc.returncode}" + (f": {tail[0]}" if tail else "")


def _local_input(port: RawPort, value: str, scratch: Path, options: StorageOptions) -> str:
    """A value as it is; local data where it is; remote data downloaded into `scratch`."""
    if is_value(port) or not is_remote(value):
        return value
    storage = open_storage(value, options)
    found = list(storage.list(value))
    if not found:
        raise UsageError(f"input {value} holds no objects", "check the path")
    if port.type.lower() == "uri_file" or (len(found) == 1 and found[0].uri == value):
        target = scratch / found[0].rel.rsplit("/", 1)[-1]
        storage.download(found[0].uri, target)
        return str(target)
    for item in found:
        storage.download(item.uri, scratch.joinpath(*item.rel.split("/")))
    return str(scratch)


def _local_output(port: RawPort, uri: str, scratch: Path) -> str:
    """Where the command writes an output: the location itself when local, else a scratch folder."""
    is_file = port.type.lower() == "uri_file"
    if is_remote(uri):
        scratch.mkdir(parents=True, exist_ok=True)
        return str(scratch / uri.rstrip("/").rsplit("/", 1)[-1]) if is_file else str(scratch)
    Path(uri).parent.mkdir(parents=True, exist_ok=True) if is_file else Path(uri).mkdir(parents=True, exist_ok=True)
    return uri


def _publish_output(local: Path, uri: str, options: StorageOptions) -> None:
    if not is_remote(uri):
        return
    storage = open_storage(uri, options)
    if local.is_file():
        storage.upload(local, uri)
        return
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.upload(path, join_uri(uri, path.relative_to(local).as_posix()))
