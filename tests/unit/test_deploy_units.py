"""deploy/: systemd units verified by systemd-analyze, the Windows service logic, compose file."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import BatchfleetError, UsageError
from common.redact import secret_values_from_env

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SYSTEMD = DEPLOY / "systemd"
WINDOWS = DEPLOY / "windows"
COMPOSE = DEPLOY / "compose"
UNITS = ["batchfleet-worker@.service", "batchfleet-coordinator.service", "batchfleet.target"]
SERVICES = [u for u in UNITS if u.endswith(".service")]
REAL_EXE = "/opt/batchfleet/venv/bin/batchfleet"

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and executables")


def load_by_path(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # pydantic resolves the module's annotations through sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def support() -> Iterator[types.ModuleType]:
    yield load_by_path("service_support", WINDOWS / "service_support.py")
    sys.modules.pop("service_support", None)


# ---------------------------------------------------------------- systemd


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, the way systemd reads a unit (repeated keys accumulate)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is required under CI (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed on this machine")
    return exe


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units copied next to a fake executable, ExecStart pointed at it."""
    fake = tmp_path / "bin" / "batchfleet"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        (units / name).write_text(text.replace(REAL_EXE, str(fake)))
    return units


def verify(units: Path, name: str) -> subprocess.CompletedProcess[str]:
    # A template is verified through an instance; systemd finds the template next to it.
    target = units / name.replace("@.", "@1.")
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", "--recursive-errors=no", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=units,
        check=False,
    )


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_cleanly(unit_dir: Path, name: str) -> None:
    result = verify(unit_dir, name)
    ours = [
        line for line in (result.stdout + result.stderr).splitlines() if "batchfleet" in line or str(unit_dir) in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert ours == []


def test_verify_would_catch_a_broken_unit(unit_dir: Path) -> None:
    """The harness itself: a typo and a missing binary are reported."""
    path = unit_dir / "batchfleet-coordinator.service"
    text = path.read_text().replace("ProtectHome=yes", "ProtectHome=yess\nRestartSecs=5")
    path.write_text(text.replace(str(unit_dir.parent / "bin" / "batchfleet"), "/nonexistent/batchfleet"))
    result = verify(unit_dir, "batchfleet-coordinator.service")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "yess" in out and "RestartSecs" in out and "/nonexistent/batchfleet" in out


@pytest.mark.parametrize("name", SERVICES)
def test_unit_security_exposure_is_low(unit_dir: Path, name: str) -> None:
    # --threshold is the exposure times ten: 20 means "2.0 of 10 or better".
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=20", str(unit_dir / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_worker_unit_contract() -> None:
    service = unit_settings(SYSTEMD / "batchfleet-worker@.service")["Service"]
    assert service["ExecStart"] == [f"{REAL_EXE} worker --node-id %H-%i"]
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "EnvironmentFile": "/etc/batchfleet/batchfleet.env",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "KillMode": "mixed",
        "User": "batchfleet",
        "DynamicUser": "no",
        "StateDirectory": "batchfleet",
        "ReadWritePaths": "/var/lib/batchfleet",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "no",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    stop_seconds = int(service["TimeoutStopSec"][0].rstrip("s"))
    assert stop_seconds >= 60, "TimeoutStopSec must cover the worker's stop grace period"
    assert service["RestartSec"]


@pytest.mark.parametrize("name", SERVICES)
def test_units_are_hardened(name: str) -> None:
    service = unit_settings(SYSTEMD / name)["Service"]
    for key in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "LockPersonality",
    ]:
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"]
    assert "yes" not in service.get("DynamicUser", [])
    # The key arrives as a systemd credential file, never as a value in the unit.
    assert service["LoadCredential"] == ["signing-key:/etc/batchfleet/signing.key"]
    assert not any(v.startswith("BATCHFLEET_SIGNING_KEY=") for v in service.get("Environment", []))


def test_memory_deny_write_execute_decision_is_explained() -> None:
    text = (SYSTEMD / "batchfleet-worker@.service").read_text()
    comment = text[: text.index("MemoryDenyWriteExecute=no")].rsplit("\n\n", 1)[-1][-600:]
    assert "libffi" in comment and "JIT" in comment
    assert "MemoryDenyWriteExecute" in (SYSTEMD / "README.md").read_text()


def test_env_example_is_valid_and_holds_no_secret(support: types.ModuleType) -> None:
    env = support.parse_env_text((SYSTEMD / "batchfleet.env.example").read_text())
    for key in ["BATCHFLEET_BROKER", "BATCHFLEET_STORE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        assert key in env
    secrets = [*secret_values_from_env(env), env["AWS_ACCESS_KEY_ID"]]
    assert secrets and all(value == "CHANGE-ME" for value in secrets)
    assert "BATCHFLEET_SIGNING_KEY_FILE" in (SYSTEMD / "batchfleet.env.example").read_text()


def test_readme_documents_operations() -> None:
    text = (SYSTEMD / "README.md").read_text()
    for needle in ["useradd", "/opt/batchfleet/venv", "batchfleet-worker@{1..4}", "journalctl", "READY=1"]:
        assert needle in text


# ---------------------------------------------------------------- Windows service support


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
        ("batchfleet-worker-1", "host-1"),
        ("batchfleet-worker-12", "host-12"),
        ("batchfleet-worker", "host-1"),
        ("custom", "host-1"),
    ],
)
def test_node_id_for(support: types.ModuleType, service: str, node: str) -> None:
    assert support.node_id_for(service, "host") == node


def test_service_settings_defaults(support: types.ModuleType) -> None:
    s = support.service_settings({}, "batchfleet-worker-3", "box", Path("C:/venv/Scripts/batchfleet.exe"))
    assert support.worker_command(s) == [
        str(Path("C:/venv/Scripts/batchfleet.exe")),
        "worker",
        "--node-id",
        "box-3",
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
    s = support.service_settings(env, "batchfleet-worker-1", "box", Path("unused"))
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
        support.service_settings({"BATCHFLEET_SERVICE_STOP_TIMEOUT": value}, "s", "h", Path("x"))


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


def wait_for_text(path: Path, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


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


# ---------------------------------------------------------------- the pywin32 service, on fakes


class FakeFramework:
    def __init__(self, args: list[str]) -> None:
        self.statuses: list[tuple[int, int]] = []

    def ReportServiceStatus(self, status: int, waitHint: int = 5000, win32ExitCode: int = 0) -> None:
        self.statuses.append((status, waitHint))


def fake_pywin32(options: dict[str, str], calls: list[tuple[Any, ...]]) -> dict[str, types.ModuleType]:
    """Just enough of pywin32 for batchfleet_service.py to run on Linux."""

    def record(name: str, result: Any = None) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, *args, *sorted(kwargs.items())))
            return result

        return call

    mods = {n: types.ModuleType(n) for n in [
        "pywintypes", "servicemanager", "win32api", "win32console", "win32event",
        "win32evtlogutil", "win32service", "win32serviceutil",
    ]}  # fmt: skip
    mods["pywintypes"].error = type("error", (Exception,), {})  # type: ignore[attr-defined]
    mods["servicemanager"].__file__ = "C:\\venv\\Lib\\site-packages\\win32\\servicemanager.pyd"
    for level in ["LogInfoMsg", "LogWarningMsg", "LogErrorMsg"]:
        setattr(mods["servicemanager"], level, record(level))
    mods["win32api"].SetConsoleCtrlHandler = record("SetConsoleCtrlHandler")  # type: ignore[attr-defined]
    mods["win32console"].AllocConsole = record("AllocConsole")  # type: ignore[attr-defined]
    event = mods["win32event"]
    event.CreateEvent = lambda *a: threading.Event()  # type: ignore[attr-defined]
    event.SetEvent = lambda e: e.set()  # type: ignore[attr-defined]
    event.WaitForSingleObject = lambda e, ms: 0 if e.wait(ms / 1000) else 258  # type: ignore[attr-defined]
    event.WAIT_OBJECT_0 = 0  # type: ignore[attr-defined]
    mods["win32evtlogutil"].AddSourceToRegistry = record("AddSourceToRegistry")  # type: ignore[attr-defined]
    svc = mods["win32service"]
    svc.SERVICE_STOP_PENDING, svc.SERVICE_AUTO_START = 3, 2  # type: ignore[attr-defined]
    util = mods["win32serviceutil"]
    util.ServiceFramework = FakeFramework  # type: ignore[attr-defined]
    util.GetServiceCustomOption = lambda name, opt, default=None: options.get(opt, default)  # type: ignore[attr-defined]
    util.GetServiceClassString = lambda cls: f"C:\\bf\\batchfleet_service.{cls.__name__}"  # type: ignore[attr-defined]
    for name in ["InstallService", "SetServiceCustomOption", "StartService", "StopService", "RemoveService"]:
        setattr(util, name, record(name))
    return mods


@pytest.fixture
def service_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, support: types.ModuleType
) -> Iterator[tuple[types.ModuleType, dict[str, str], list[tuple[Any, ...]]]]:
    options: dict[str, str] = {}
    calls: list[tuple[Any, ...]] = []
    for name, module in fake_pywin32(options, calls).items():
        monkeypatch.setitem(sys.modules, name, module)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    module = load_by_path("batchfleet_service", WINDOWS / "batchfleet_service.py")
    yield module, options, calls
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.modules.pop("batchfleet_service", None)


FAKE_WORKER = """#!{python}
import json, os, pathlib, signal, sys, time
record = pathlib.Path(os.environ["FAKE_WORKER_RECORD"])
if os.environ.get("FAKE_WORKER_FAIL"):
    sys.exit(3)
def drain(signum, frame):
    record.with_suffix(".stopped").write_text(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, drain)
record.write_text(json.dumps({{"argv": sys.argv[1:], "broker": os.environ.get("BATCHFLEET_BROKER")}}))
print("worker running", flush=True)
while True:
    time.sleep(0.05)
"""


def write_service_files(tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    exe = tmp_path / "batchfleet"
    exe.write_text(FAKE_WORKER.format(python=sys.executable))
    exe.chmod(0o755)
    env_file = tmp_path / "batchfleet.env"
    env_file.write_text(
        "BATCHFLEET_BROKER=amqp://fleet:svc-secret-pw@rabbit/\n"
        f"FAKE_WORKER_RECORD={tmp_path / 'record.json'}\n"
        f"BATCHFLEET_SERVICE_LOG={tmp_path / 'logs' / 'worker.log'}\n"
        "BATCHFLEET_SERVICE_STOP_TIMEOUT=10\n" + extra
    )
    return exe, env_file


@posix_only
def test_service_runs_and_stops_the_worker(
    tmp_path: Path, service_env: tuple[types.ModuleType, dict[str, str], list[tuple[Any, ...]]]
) -> None:
    module, options, calls = service_env
    exe, env_file = write_service_files(tmp_path)
    options.update(EnvFile=str(env_file), Exe=str(exe))
    service = module.BatchfleetWorkerService(["batchfleet-worker-2"])
    runner = threading.Thread(target=service.SvcDoRun)
    runner.start()
    try:
        record = wait_for_text(tmp_path / "record.json", "argv")
    finally:
        service.SvcStop()
        runner.join(30)
    assert not runner.is_alive()
    assert f'"argv": ["worker", "--node-id", "{socket.gethostname()}-2"]' in record
    assert "svc-secret-pw" in record  # the worker does get its settings...
    assert (tmp_path / "record.stopped").read_text() == str(int(signal.SIGTERM))
    assert "worker running" in (tmp_path / "logs" / "worker.log").read_text()
    assert (3, 25_000) in service.statuses  # STOP_PENDING with grace + kill + margin
    names = [c[0] for c in calls]
    assert "AllocConsole" in names and ("SetConsoleCtrlHandler" in names)
    events = " ".join(str(c) for c in calls if c[0].startswith("Log"))
    assert "stop requested" in events and "stopped" in events
    assert "svc-secret-pw" not in events  # ...but never shows them


@posix_only
def test_service_fails_after_repeated_worker_failures(
    tmp_path: Path, service_env: tuple[types.ModuleType, dict[str, str], list[tuple[Any, ...]]]
) -> None:
    module, options, calls = service_env
    exe, env_file = write_service_files(
        tmp_path, "FAKE_WORKER_FAIL=1\nBATCHFLEET_SERVICE_RESTART_DELAY=0\nNOTE=amqp://x:leakme1@h/\n"
    )
    options.update(EnvFile=str(env_file), Exe=str(exe))
    service = module.BatchfleetWorkerService(["batchfleet-worker-1"])
    with pytest.raises(BatchfleetError, match="failed 5 times"):
        service.SvcDoRun()
    errors = [c for c in calls if c[0] == "LogErrorMsg"]
    assert errors and "batchfleet-worker-1" in str(errors[-1])
    assert "leakme1" not in str(calls)


def test_service_refuses_missing_settings_file(
    tmp_path: Path, service_env: tuple[types.ModuleType, dict[str, str], list[tuple[Any, ...]]]
) -> None:
    module, options, calls = service_env
    options.update(EnvFile=str(tmp_path / "missing.env"))
    with pytest.raises(UsageError, match="does not exist"):
        module.BatchfleetWorkerService(["batchfleet-worker-1"]).SvcDoRun()
    assert any(c[0] == "LogErrorMsg" for c in calls)


def test_service_install_command(
    tmp_path: Path, service_env: tuple[types.ModuleType, dict[str, str], list[tuple[Any, ...]]]
) -> None:
    module, _, calls = service_env
    exe = tmp_path / "batchfleet.exe"
    exe.write_text("")
    env_file = tmp_path / "batchfleet.env"
    assert module.main(["install", "--instances", "2", "--exe", str(exe), "--env-file", str(env_file)]) == 0
    installs = [c for c in calls if c[0] == "InstallService"]
    assert [c[2] for c in installs] == ["batchfleet-worker-1", "batchfleet-worker-2"]
    assert all(c[1].endswith("batchfleet_service.BatchfleetWorkerService") for c in installs)
    assert ("startType", 2) in installs[0] and ("delayedstart", True) in installs[0]
    options = {(c[1], c[2]): c[3] for c in calls if c[0] == "SetServiceCustomOption"}
    assert options[("batchfleet-worker-2", "EnvFile")] == str(env_file.resolve())
    assert options[("batchfleet-worker-1", "Exe")] == str(exe.resolve())


def test_service_start_stop_remove_commands(
    service_env: tuple[types.ModuleType, dict[str, str], list[tuple[Any, ...]]],
) -> None:
    module, _, calls = service_env
    module.main(["start", "--instances", "2"])
    module.main(["remove"])
    assert [c[:2] for c in calls] == [
        ("StartService", "batchfleet-worker-1"),
        ("StartService", "batchfleet-worker-2"),
        ("StopService", "batchfleet-worker-1"),
        ("RemoveService", "batchfleet-worker-1"),
    ]


def test_windows_scripts_and_readme_present() -> None:
    install = (WINDOWS / "install.ps1").read_text()
    assert "batchfleet_service.py" in install and "failureflag" in install and "icacls" in install
    assert "remove --all" in (WINDOWS / "uninstall.ps1").read_text()
    readme = (WINDOWS / "README.md").read_text()
    assert "NSSM" in readme and "CTRL_BREAK" in readme


# ---------------------------------------------------------------- compose


def test_compose_file_shape() -> None:
    doc = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"rabbitmq", "minio", "minio-init", "coordinator", "worker-1", "worker-2"} <= set(services)
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["coordinator"]["build"]["dockerfile"] == "deploy/compose/Dockerfile"
    assert (COMPOSE / "Dockerfile").is_file()
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), name
        env = service.get("environment", {})
        for key, value in env.items():
            if any(word in key for word in ("PASSWORD", "SECRET", "SIGNING_KEY", "BROKER")):
                assert "${" in str(value), f"{name}.{key} must come from .env"
    node_ids = [s["command"][-1] for n, s in services.items() if n.startswith("worker-")]
    assert len(set(node_ids)) == len(node_ids)
