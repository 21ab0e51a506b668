"""batchfleet worker as a Windows service (pywin32).

    python batchfleet_service.py install [--instances N] [--env-file PATH] [--exe PATH]
    python batchfleet_service.py start|stop|remove [--instances N]
    python batchfleet_service.py debug batchfleet-worker-1     (pywin32's console debug run)

Each service runs `batchfleet worker --node-id {host}-{machine}-<n>` as a child process in its own
process group, restarts it when it fails, and on stop sends CTRL_BREAK, waits the grace
period, then kills it. The logic lives in service_support.py (tested on Linux); this file
only wires it to the Service Control Manager. See README.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pywintypes
import service_support as support
import servicemanager
import win32api
import win32console
import win32event
import win32evtlogutil
import win32service
import win32serviceutil

from common.errors import BatchfleetError
from common.redact import RedactingFilter, secret_values_from_env

log = logging.getLogger("batchfleet.service")


def data_dir() -> Path:
    """%ProgramData%\\batchfleet: settings, logs."""
    return Path(os.environ.get("ProgramData", r"C:\ProgramData"), "batchfleet")


def default_exe() -> Path:
    """batchfleet.exe next to the Python running this script (the venv's Scripts folder)."""
    return Path(sys.executable).with_name("batchfleet.exe")


class _EventLogHandler(logging.Handler):
    """Service messages go to the Windows Application event log under the service's name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                servicemanager.LogErrorMsg(text)
            elif record.levelno >= logging.WARNING:
                servicemanager.LogWarningMsg(text)
            else:
                servicemanager.LogInfoMsg(text)
        except Exception:
            self.handleError(record)


class BatchfleetWorkerService(win32serviceutil.ServiceFramework):
    """One batchfleet worker; install several (batchfleet-worker-1, -2, ...) to scale a machine."""

    _svc_name_ = support.SERVICE_PREFIX
    _svc_display_name_ = "batchfleet worker"
    _svc_description_ = "Runs batchfleet mini-batches from the fleet's queue (batchfleet worker)."

    def __init__(self, args: Sequence[str]) -> None:
        # One class serves every instance: take the name the SCM started us under.
        self._svc_name_ = args[0]
        super().__init__(args)
        self._stop_event = win32event.CreateEvent(None, True, False, None)
        self._stop_hint_ms = 120_000
        self._ctrl_handler: Any = None

    def SvcStop(self) -> None:
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=self._stop_hint_ms)
        win32event.SetEvent(self._stop_event)

    # Machine shutdown: the same drain, within the time Windows allows.
    SvcShutdown = SvcStop

    def SvcDoRun(self) -> None:
        handler = _EventLogHandler()
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        try:
            self._run(handler)
        except BatchfleetError as exc:
            log.error("%s: %s", self._svc_name_, exc.line())
            # Raising makes pythonservice report a non-zero exit, so the recovery actions
            # set by install.ps1 (restart after a delay) apply.
            raise

    def _run(self, handler: logging.Handler) -> None:
        name = self._svc_name_
        env_file = Path(win32serviceutil.GetServiceCustomOption(name, "EnvFile", str(data_dir() / "batchfleet.env")))
        config = Path(win32serviceutil.GetServiceCustomOption(name, "ConfigFile", str(data_dir() / "batchfleet.toml")))
        file_env = support.read_settings(env_file, config)
        handler.addFilter(RedactingFilter(secret_values_from_env(file_env)))
        exe = Path(win32serviceutil.GetServiceCustomOption(name, "Exe", str(default_exe())))
        settings = support.service_settings(file_env, name, exe)
        self._stop_hint_ms = support.stop_wait_hint_ms(settings)
        self._ctrl_handler = _prepare_console()
        log_file = settings.log_file or data_dir() / "logs" / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = support.worker_command(settings)
        env = support.child_environment(os.environ, file_env)
        log.info("%s: settings from %s and %s, worker output in %s", name, config, env_file, log_file)

        def stop_requested(timeout: float) -> bool:
            waited = win32event.WaitForSingleObject(self._stop_event, int(timeout * 1000))
            return bool(waited == win32event.WAIT_OBJECT_0)

        with log_file.open("ab") as output:
            support.supervise(lambda: support.spawn_worker(cmd, env, output), stop_requested, settings)


def _prepare_console() -> Any:
    """Give the service a (hidden) console and ignore console events in it.

    A service starts without a console, and CTRL_BREAK reaches only processes that share the
    sender's console; the worker inherits this one. The handler keeps the service itself
    from being stopped by an event meant for the worker's process group.
    """
    try:
        win32console.AllocConsole()
    except pywintypes.error:
        log.debug("the service already has a console (debug run)")

    def ignore(_event: int) -> bool:
        return True

    win32api.SetConsoleCtrlHandler(ignore, True)
    return ignore


def _install(names: list[str], env_file: Path, exe: Path, config_file: Path) -> None:
    class_string = win32serviceutil.GetServiceClassString(BatchfleetWorkerService)
    for name in names:
        win32serviceutil.InstallService(
            class_string,
            name,
            f"batchfleet worker ({name})",
            startType=win32service.SERVICE_AUTO_START,
            description=BatchfleetWorkerService._svc_description_,
            delayedstart=True,  # after the network is up
        )
        win32serviceutil.SetServiceCustomOption(name, "EnvFile", str(env_file))
        win32serviceutil.SetServiceCustomOption(name, "ConfigFile", str(config_file))
        win32serviceutil.SetServiceCustomOption(name, "Exe", str(exe))
        win32evtlogutil.AddSourceToRegistry(name, servicemanager.__file__)
        print(f"installed {name}: settings {config_file} and {env_file}, worker {exe}")


def _remove(names: list[str]) -> None:
    for name in names:
        try:
            win32serviceutil.StopService(name)
        except pywintypes.error as exc:
            print(f"{name} was not running ({exc.strerror})")
        win32serviceutil.RemoveService(name)
        print(f"removed {name}")


def _installed_names() -> list[str]:
    """Every batchfleet worker service on this machine."""
    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ENUMERATE_SERVICE)
    try:
        found = win32service.EnumServicesStatus(scm, win32service.SERVICE_WIN32, win32service.SERVICE_STATE_ALL)
    finally:
        win32service.CloseServiceHandle(scm)
    return sorted(name for name, _display, _status in found if name.startswith(support.SERVICE_PREFIX))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="batchfleet_service.py", description="batchfleet worker as a Windows service")
    parser.add_argument("command", choices=["install", "remove", "start", "stop"])
    parser.add_argument("--instances", type=int, default=1, help="worker services on this machine")
    parser.add_argument("--all", action="store_true", help="start, stop or remove every installed worker")
    parser.add_argument("--env-file", type=Path, default=data_dir() / "batchfleet.env")
    parser.add_argument("--config-file", type=Path, default=data_dir() / "batchfleet.toml")
    parser.add_argument("--exe", type=Path, default=default_exe(), help="the venv's batchfleet.exe")
    if argv and argv[0] not in {"install", "remove", "start", "stop"}:
        # Anything else (debug, update, restart...) is pywin32's own command line.
        return int(win32serviceutil.HandleCommandLine(BatchfleetWorkerService, argv=[sys.argv[0], *argv]) or 0)
    args = parser.parse_args(argv)
    names = support.service_names(args.instances)
    if args.all and args.command != "install":
        names = _installed_names()
    if args.command == "install":
        if not args.exe.is_file():
            parser.error(f"{args.exe} does not exist; pass --exe PATH\\TO\\venv\\Scripts\\batchfleet.exe")
        _install(names, args.env_file.resolve(), args.exe.resolve(), args.config_file.resolve())
    elif args.command == "remove":
        _remove(names)
    else:
        action = win32serviceutil.StartService if args.command == "start" else win32serviceutil.StopService
        for name in names:
            action(name)
            print(f"{args.command} {name}: requested")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
