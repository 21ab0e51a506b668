"""deploy/windows/batchfleet_service.py on a fake pywin32, and the Windows scripts and README."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import BatchfleetError, UsageError
from tests.unit.deploy_helpers import WINDOWS, load_by_path, posix_only, wait_for_text


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
record.write_text(json.dumps({{"argv": sys.argv[1:], "broker": os.environ.get("BATCHFLEET_BROKER"),
                              "config": os.environ.get("BATCHFLEET_CONFIG")}}))
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
    config = tmp_path / "batchfleet.toml"
    config.write_text('store = "s3://jobs/area"\n')
    options.update(EnvFile=str(env_file), Exe=str(exe), ConfigFile=str(config))
    service = module.BatchfleetWorkerService(["batchfleet-worker-2"])
    runner = threading.Thread(target=service.SvcDoRun)
    runner.start()
    try:
        record = wait_for_text(tmp_path / "record.json", "argv")
    finally:
        service.SvcStop()
        runner.join(30)
    assert not runner.is_alive()
    assert '"argv": ["worker", "--node-id", "{host}-{machine}-2"]' in record  # the worker fills them in
    assert f'"config": "{config}"' in record  # the same batchfleet.toml as under systemd
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
    assert options[("batchfleet-worker-1", "ConfigFile")].endswith("batchfleet.toml")


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
