"""What the Windows service does, kept free of pywin32 so it runs (and is tested) anywhere.

The service (batchfleet_service.py) only wires these functions to the Service Control
Manager: read the settings file, start `batchfleet worker` as a child process in its own
process group, restart it when it fails, and on stop send CTRL_BREAK, wait, then kill.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from common.errors import BatchfleetError, UsageError

log = logging.getLogger(__name__)

SERVICE_PREFIX = "batchfleet-worker"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

StopOutcome = Literal["exited", "stopped", "killed"]


class ServiceFailure(BatchfleetError):
    """The worker kept failing; the service stops with an error so Windows' recovery applies."""


class ChildProcess(Protocol):
    """The part of subprocess.Popen the supervisor uses."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...

    def send_signal(self, sig: int) -> None: ...


class ServiceSettings(BaseModel):
    """How the service runs its worker; read from the same env file as the worker's settings."""

    model_config = ConfigDict(extra="forbid")

    exe: Path = Field(description="The batchfleet executable (venv\\Scripts\\batchfleet.exe).")
    node_id: str
    extra_args: list[str] = Field(default_factory=list)
    stop_timeout: float = Field(default=90, gt=0, description="Seconds from CTRL_BREAK to kill.")
    kill_wait: float = Field(default=10, gt=0, description="Seconds to wait for the exit after a kill.")
    restart_delay: float = Field(default=5, ge=0, description="Seconds between a failure and the restart.")
    max_failures: int = Field(default=5, ge=1, description="Failures within failure_window before giving up.")
    failure_window: float = Field(default=600, gt=0)
    log_file: Path | None = None


# ---------------------------------------------------------------- settings file


def parse_env_text(text: str, source: str = "env file") -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them.

    '#' and ';' start comment lines, values may be "double" (backslash escapes) or 'single'
    quoted, a trailing backslash continues a line, the last duplicate wins. Errors name the
    line number only: the line may hold a password.
    """
    result: dict[str, str] = {}
    for number, line in _logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        name, sep, value = stripped.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise UsageError(f"{source} line {number} is not KEY=VALUE", "keys are letters, digits and '_'")
        result[name] = _unquote(value.strip(), source, number)
    return result


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if pending is not None:
            start, head = pending
            raw, number = head + raw, start
        if raw.endswith("\\") and not raw.lstrip().startswith(("#", ";")):
            pending = (number, raw[:-1])
            continue
        pending = None
        lines.append((number, raw))
    if pending is not None:
        lines.append(pending)
    return lines


def _unquote(value: str, source: str, number: int) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if not value.startswith('"'):
        return value
    if len(value) < 2 or not value.endswith('"'):
        raise UsageError(f"{source} line {number} has an unterminated double quote")
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), value[1:-1])


def read_env_file(path: Path) -> dict[str, str]:
    """parse_env_text on a file; a missing file is a UsageError naming it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"settings file {path} does not exist", "copy batchfleet.env.example there") from None
    except OSError as exc:
        raise UsageError(f"cannot read settings file {path}: {exc.strerror or exc}") from None
    return parse_env_text(text, source=str(path))


def read_settings(env_file: Path, config_file: Path) -> dict[str, str]:
    """The environment the worker gets from the service's files: the env file's KEY=VALUE lines
    (credentials, service keys), and BATCHFLEET_CONFIG naming batchfleet.toml, so the worker reads
    the same configuration file as under systemd. Either file may be missing, not both."""
    has_config = config_file.is_file()
    env = {} if has_config and not env_file.exists() else read_env_file(env_file)
    if has_config:
        env.setdefault("BATCHFLEET_CONFIG", str(config_file))
    return env


# ---------------------------------------------------------------- command line


def node_id_for(service_name: str) -> str:
    """`{host}-{machine}-<n>` for service `batchfleet-worker-<n>`, `...-1` for `batchfleet-worker`.

    The worker fills in the host name and 8 hex digits of the machine's MachineGuid, so ids stay
    unique on cloned machines; the same shape as the systemd unit's `{host}-{machine}-%i`.
    """
    suffix = service_name[len(SERVICE_PREFIX) :].lstrip("-_") if service_name.startswith(SERVICE_PREFIX) else ""
    return f"{{host}}-{{machine}}-{suffix or '1'}"


def service_settings(env: Mapping[str, str], service_name: str, default_exe: Path) -> ServiceSettings:
    """ServiceSettings from the env file's BATCHFLEET_SERVICE_* keys and the service name."""
    values: dict[str, Any] = {
        "exe": env.get("BATCHFLEET_EXE") or default_exe,
        "node_id": env.get("BATCHFLEET_NODE_ID") or node_id_for(service_name),
        "extra_args": env.get("BATCHFLEET_WORKER_ARGS", "").split(),
    }
    for key, field in (("STOP_TIMEOUT", "stop_timeout"), ("RESTART_DELAY", "restart_delay")):
        if raw := env.get(f"BATCHFLEET_SERVICE_{key}"):
            values[field] = raw
    if raw := env.get("BATCHFLEET_SERVICE_LOG"):
        values["log_file"] = raw
    try:
        return ServiceSettings.model_validate(values)
    except ValueError as exc:
        first = str(exc).splitlines()[1:3]
        raise UsageError(f"bad service setting: {' '.join(s.strip() for s in first)}") from None


def worker_command(settings: ServiceSettings) -> list[str]:
    """argv for the worker; no secret is ever on it (they travel in the environment)."""
    return [str(settings.exe), "worker", "--node-id", settings.node_id, *settings.extra_args]


def child_environment(base: Mapping[str, str], file_env: Mapping[str, str]) -> dict[str, str]:
    """The service's environment overlaid with the env file; the file wins."""
    env = dict(base)
    env.update(file_env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ---------------------------------------------------------------- process control


def spawn_options() -> dict[str, Any]:
    """Popen options that give the child its own process group.

    On Windows CTRL_BREAK can then reach the worker without reaching the service; POSIX gets
    a new session, the nearest equivalent, so the same code runs under the Linux tests.
    """
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def break_signal() -> int:
    """The polite stop: CTRL_BREAK_EVENT on Windows (SIGBREAK in Python), SIGTERM elsewhere."""
    if sys.platform == "win32":
        return int(signal.CTRL_BREAK_EVENT)
    return int(signal.SIGTERM)


def spawn_worker(cmd: Sequence[str], env: Mapping[str, str], output: IO[bytes] | None) -> subprocess.Popen[bytes]:
    """Start the worker with stdin closed and output appended to `output` (or discarded)."""
    sink: IO[bytes] | int = output if output is not None else subprocess.DEVNULL
    return subprocess.Popen(
        list(cmd),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=sink,
        stderr=subprocess.STDOUT,
        **spawn_options(),
    )


def stop_child(
    proc: ChildProcess,
    grace: float,
    interrupt: Callable[[ChildProcess], None],
    kill_wait: float = 10,
) -> StopOutcome:
    """Ask the child to stop, wait up to `grace` seconds, then kill it."""
    if proc.poll() is not None:
        return "exited"
    try:
        interrupt(proc)
    except OSError as exc:
        # The child may have exited between poll() and the signal.
        log.warning("could not interrupt worker pid %s: %s", proc.pid, exc)
    try:
        proc.wait(timeout=grace)
        return "stopped"
    except subprocess.TimeoutExpired:
        log.warning("worker pid %s still running %.0f s after the stop request; killing it", proc.pid, grace)
    proc.kill()
    try:
        proc.wait(timeout=kill_wait)
    except subprocess.TimeoutExpired:
        log.error("worker pid %s did not exit %.0f s after being killed", proc.pid, kill_wait)
    return "killed"


def send_break(proc: ChildProcess) -> None:
    """interrupt() for stop_child: the platform's polite stop signal."""
    proc.send_signal(break_signal())


def supervise(
    spawn: Callable[[], ChildProcess],
    stop_requested: Callable[[float], bool],
    settings: ServiceSettings,
    interrupt: Callable[[ChildProcess], None] = send_break,
    clock: Callable[[], float] = time.monotonic,
    poll_interval: float = 1.0,
) -> int:
    """Run the worker until a stop is requested; restart it when it fails.

    `stop_requested(timeout)` blocks up to `timeout` seconds and says whether the service
    was asked to stop. A worker that exits 0 stops the service (it stopped on purpose);
    `max_failures` failures within `failure_window` raise ServiceFailure.
    """
    failures: list[float] = []
    while True:
        try:
            proc = spawn()
        except OSError as exc:
            raise ServiceFailure(
                f"cannot start the worker {settings.exe}: {exc.strerror or exc}",
                "check BATCHFLEET_EXE in the settings file",
            ) from None
        log.info("worker started: pid %s, node %s", proc.pid, settings.node_id)
        code = _wait_exit_or_stop(proc, stop_requested, poll_interval)
        if code is None:
            outcome = stop_child(proc, settings.stop_timeout, interrupt, settings.kill_wait)
            log.info("stop requested; worker pid %s %s", proc.pid, outcome)
            return 0
        if code == 0:
            log.info("worker exited with code 0; the service stops too")
            return 0
        now = clock()
        failures = [t for t in failures if now - t < settings.failure_window] + [now]
        if len(failures) >= settings.max_failures:
            raise ServiceFailure(
                f"worker failed {len(failures)} times within {settings.failure_window:.0f} s (last exit code {code})",
                "see the worker log",
            )
        log.warning("worker exited with code %s; restarting in %.0f s", code, settings.restart_delay)
        if stop_requested(settings.restart_delay):
            return 0


def _wait_exit_or_stop(proc: ChildProcess, stop_requested: Callable[[float], bool], interval: float) -> int | None:
    """The child's exit code, or None once a stop is requested first."""
    while True:
        code = proc.poll()
        if code is not None:
            return code
        if stop_requested(interval):
            return None


def service_names(instances: int) -> list[str]:
    """Service names for `instances` workers on one machine: batchfleet-worker-1, -2, ..."""
    if instances < 1:
        raise UsageError(f"--instances must be at least 1, got {instances}")
    return [f"{SERVICE_PREFIX}-{n}" for n in range(1, instances + 1)]


def stop_wait_hint_ms(settings: ServiceSettings) -> int:
    """How long to tell Windows a stop may take: the grace, the kill, and a margin."""
    return int((settings.stop_timeout + settings.kill_wait + 5) * 1000)
