"""deploy/windows/service_support.py: env files, service settings, stopping and supervising the worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.errors import BatchfleetError, UsageError
from tests.unit.deploy_helpers import posix_only, wait_for_text

ENV_CASES = [
    ("A=1\nB=two words\n", {"A": "1", "B": "two words"}),
    ("# comment\n; also\n\n  C = spaced  \n", {"C": "spaced"}),
    ('D="quoted # not a comment"\n', {"D": "quoted # not a comment"}),
    ("E='single \\n raw'\n", {"E": "single \\n raw"}),
    ('F="esc \\" \\\\ \\n"\n', {"F": 'esc " \\ \n'}),
    ("G=a=b=c\n", {"G": "a=b=c"}),
    ("H=first\nH=second\n", {"H": "second"}),
    ("I=con\\\ntinued\nJ=2\n", {"I": "continued", "J": "2"}),
    ("K=\n", {"K": ""}),
    ("L=amqp://u:p@h/\r\nM=x\r\n", {"L": "amqp://u:p@h/", "M": "x"}),
]


@pytest.mark.parametrize(("text", "expected"), ENV_CASES)
def test_parse_env_text(support: types.ModuleType, text: str, expected: dict[str, str]) -> None:
    assert support.parse_env_text(text) == expected


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\nexport B=2\n", 2),
        ("not a setting hunter2-secret\n", 1),
        ("1BAD=x\n", 1),
        ('A=1\n\nQ="unterminated hunter2-secret\n', 3),
    ],
)
def test_parse_env_errors_name_line_not_value(support: types.ModuleType, text: str, line: int) -> None:
    with pytest.raises(UsageError) as err:
        support.parse_env_text(text, source="batchfleet.env")
    assert f"line {line}" in err.value.line()
    assert "hunter2" not in err.value.line()


def test_read_env_file(support: types.ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "batchfleet.env"
    path.write_bytes("\ufeffA=1\r\n".encode())
    assert support.read_env_file(path) == {"A": "1"}
    with pytest.raises(UsageError, match="does not exist"):
        support.read_env_file(tmp_path / "missing.env")


@pytest.mark.parametrize(
    ("service", "node"),
    [
        ("batchfleet-worker-1", "{host}-{machine}-1"),
        ("batchfleet-worker-12", "{host}-{machine}-12"),
        ("batchfleet-worker", "{host}-{machine}-1"),
        ("custom", "{host}-{machine}-1"),
    ],
)
def test_node_id_for(support: types.ModuleType, service: str, node: str) -> None:
    assert support.node_id_for(service) == node


def test_read_settings_points_the_worker_at_batchfleet_toml(support: types.ModuleType, tmp_path: Path) -> None:
    env_file, config = tmp_path / "batchfleet.env", tmp_path / "batchfleet.toml"
    with pytest.raises(UsageError, match="does not exist"):
        support.read_settings(env_file, config)  # neither file
    config.write_text('store = "s3://x/y"\n')
    assert support.read_settings(env_file, config) == {"BATCHFLEET_CONFIG": str(config)}  # the toml alone
    env_file.write_text("AWS_ACCESS_KEY_ID=k\n")
    assert support.read_settings(env_file, config) == {"AWS_ACCESS_KEY_ID": "k", "BATCHFLEET_CONFIG": str(config)}
    config.unlink()
    assert support.read_settings(env_file, config) == {"AWS_ACCESS_KEY_ID": "k"}  # the env file alone


def test_service_settings_defaults(support: types.ModuleType) -> None:
    s = support.service_settings({}, "batchfleet-worker-3", Path("C:/venv/Scripts/batchfleet.exe"))
    assert support.worker_command(s) == [
        str(Path("C:/venv/Scripts/batchfleet.exe")),
        "worker",
        "--node-id",
        "{host}-{machine}-3",
    ]
    assert (s.stop_timeout, s.restart_delay, s.log_file) == (90, 5, None)
    assert support.stop_wait_hint_ms(s) == 105_000


def test_service_settings_overrides(support: types.ModuleType) -> None:
    env = {
        "BATCHFLEET_EXE": "D:/bf/batchfleet.exe",
        "BATCHFLEET_NODE_ID": "gpu-box",
        "BATCHFLEET_WORKER_ARGS": "--prefetch 2  --verbose",
        "BATCHFLEET_SERVICE_STOP_TIMEOUT": "300",
        "BATCHFLEET_SERVICE_RESTART_DELAY": "0",
        "BATCHFLEET_SERVICE_LOG": "D:/logs/w.log",
    }
    s = support.service_settings(env, "batchfleet-worker-1", Path("unused"))
    assert support.worker_command(s) == [
        str(Path("D:/bf/batchfleet.exe")),
        "worker",
        "--node-id",
        "gpu-box",
        "--prefetch",
        "2",
        "--verbose",
    ]
    assert (s.stop_timeout, s.restart_delay, s.log_file) == (300, 0, Path("D:/logs/w.log"))


@pytest.mark.parametrize("value", ["soon", "-1", "0"])
def test_service_settings_refuse_bad_timeouts(support: types.ModuleType, value: str) -> None:
    with pytest.raises(UsageError, match="bad service setting"):
        support.service_settings({"BATCHFLEET_SERVICE_STOP_TIMEOUT": value}, "s", Path("x"))


def test_child_environment(support: types.ModuleType) -> None:
    env = support.child_environment({"PATH": "/bin", "A": "service"}, {"A": "file", "B": "2"})
    assert env == {"PATH": "/bin", "A": "file", "B": "2", "PYTHONUNBUFFERED": "1"}


def test_service_names(support: types.ModuleType) -> None:
    assert support.service_names(3) == ["batchfleet-worker-1", "batchfleet-worker-2", "batchfleet-worker-3"]
    with pytest.raises(UsageError):
        support.service_names(0)


class FakeProc:
    """A child that exits with `code` after `polls` polls, and records what is done to it."""

    def __init__(self, code: int | None = 0, polls: int = 0, obeys: bool = True, pid: int = 4242) -> None:
        self.code, self.polls, self.obeys, self.pid = code, polls, obeys, pid
        self.calls: list[str] = []
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.polls <= 0 and self.code is not None:
            self.returncode = self.code
        self.polls -= 1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.calls.append(f"wait({timeout})")
        if self.returncode is None:
            raise subprocess.TimeoutExpired("worker", timeout or 0)
        return self.returncode

    def kill(self) -> None:
        self.calls.append("kill")
        self.returncode = -9

    def send_signal(self, sig: int) -> None:
        self.calls.append(f"signal({sig})")
        if self.obeys:
            self.returncode = 0


def interrupt(proc: Any) -> None:
    proc.calls.append("interrupt")
    if proc.obeys:
        proc.returncode = 0


def test_stop_child_already_exited(support: types.ModuleType) -> None:
    proc = FakeProc(code=1)
    assert support.stop_child(proc, 5, interrupt) == "exited"
    assert proc.calls == []


def test_stop_child_graceful(support: types.ModuleType) -> None:
    proc = FakeProc(code=None)
    assert support.stop_child(proc, 5, interrupt) == "stopped"
    assert proc.calls == ["interrupt", "wait(5)"]


def test_stop_child_kills_after_grace(support: types.ModuleType) -> None:
    proc = FakeProc(code=None, obeys=False)
    assert support.stop_child(proc, 5, interrupt, kill_wait=2) == "killed"
    assert proc.calls == ["interrupt", "wait(5)", "kill", "wait(2)"]


def test_stop_child_survives_interrupt_race(support: types.ModuleType) -> None:
    proc = FakeProc(code=None, obeys=False)

    def gone(_proc: Any) -> None:
        raise ProcessLookupError("no such process")

    assert support.stop_child(proc, 1, gone) == "killed"


def test_send_break_uses_platform_signal(support: types.ModuleType) -> None:
    proc = FakeProc(code=None)
    support.send_break(proc)
    assert proc.calls == [f"signal({support.break_signal()})"]


CHILD = """
import signal, sys, time
mode = sys.argv[1]
def handler(signum, frame):
    print("draining", signum, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, handler if mode == "polite" else signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@posix_only
@pytest.mark.parametrize(("mode", "outcome"), [("polite", "stopped"), ("stubborn", "killed")])
def test_stop_sequence_on_a_real_child(support: types.ModuleType, tmp_path: Path, mode: str, outcome: str) -> None:
    log = tmp_path / "worker.log"
    with log.open("ab") as output:
        proc = support.spawn_worker([sys.executable, "-c", CHILD, mode], dict(os.environ), output)
        try:
            wait_for_text(log, "ready")
            # Its own process group, like CREATE_NEW_PROCESS_GROUP on Windows.
            assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
            started = time.monotonic()
            assert support.stop_child(proc, 1.0, support.send_break, kill_wait=5) == outcome
            assert time.monotonic() - started < 6
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == (0 if mode == "polite" else -9)
    assert ("draining" in log.read_text()) == (mode == "polite")


class StopSwitch:
    """stop_requested() for supervise: True from the `after`-th call on; records timeouts."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.timeouts: list[float] = []

    def __call__(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return self.after is not None and len(self.timeouts) >= self.after


def settings(support: types.ModuleType, **overrides: Any) -> Any:
    values = {"exe": Path("batchfleet"), "node_id": "n-1", "restart_delay": 7, "max_failures": 3}
    return support.ServiceSettings(**{**values, **overrides})


def spawner(procs: list[FakeProc]) -> tuple[Callable[[], FakeProc], list[FakeProc]]:
    started: list[FakeProc] = []

    def spawn() -> FakeProc:
        started.append(procs[len(started)])
        return started[-1]

    return spawn, started


def test_supervise_clean_exit_stops_service(support: types.ModuleType) -> None:
    spawn, started = spawner([FakeProc(code=0, polls=2)])
    assert support.supervise(spawn, StopSwitch(None), settings(support), interrupt=interrupt) == 0
    assert len(started) == 1


def test_supervise_restarts_until_stopped(support: types.ModuleType) -> None:
    spawn, started = spawner([FakeProc(code=1), FakeProc(code=2)])
    stop = StopSwitch(after=2)
    assert support.supervise(spawn, stop, settings(support), interrupt=interrupt) == 0
    assert len(started) == 2
    assert stop.timeouts == [7, 7]


def test_supervise_gives_up_after_repeated_failures(support: types.ModuleType) -> None:
    spawn, started = spawner([FakeProc(code=3) for _ in range(5)])
    with pytest.raises(support.ServiceFailure) as err:
        support.supervise(spawn, StopSwitch(None), settings(support), interrupt=interrupt)
    assert len(started) == 3
    assert "3 times" in err.value.line() and "exit code 3" in err.value.line()
    assert isinstance(err.value, BatchfleetError)


def test_supervise_forgets_old_failures(support: types.ModuleType) -> None:
    ticks = iter(range(0, 100_000, 1000))
    spawn, started = spawner([FakeProc(code=1) for _ in range(6)])
    stop = StopSwitch(after=6)
    result = support.supervise(
        spawn, stop, settings(support, failure_window=600), interrupt=interrupt, clock=lambda: next(ticks)
    )
    assert result == 0 and len(started) == 6


def test_supervise_stop_while_running(support: types.ModuleType) -> None:
    proc = FakeProc(code=None)
    spawn, _ = spawner([proc])
    stop = StopSwitch(after=3)
    assert support.supervise(spawn, stop, settings(support, stop_timeout=42), interrupt=interrupt) == 0
    assert proc.calls == ["interrupt", "wait(42.0)"]
    assert stop.timeouts == [1.0, 1.0, 1.0]


def test_supervise_missing_executable(support: types.ModuleType) -> None:
    def spawn() -> FakeProc:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(support.ServiceFailure, match="cannot start the worker"):
        support.supervise(spawn, StopSwitch(None), settings(support))
