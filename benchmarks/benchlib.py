"""Shared pieces of the fleet benchmarks: import paths, servers, a worker, a latency proxy.

`python benchmarks/NAME.py` puts benchmarks/ first on sys.path, where benchmarks/common.py hides
the project's `common` package. Importing this module moves the repository root in front, so
`common`, `coordinator`, `worker` and `tests` are the project's and the benchmark helpers are
`benchmarks.common`; `python -m benchmarks.NAME` works the same way.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _use_project_packages() -> None:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(REPO))
    shadow = sys.modules.get("common")
    if shadow is not None and Path(getattr(shadow, "__file__", "") or "").resolve() == HERE / "common.py":
        del sys.modules["common"]


_use_project_packages()


def bench_module(name: str) -> ModuleType:
    """benchmarks/<name>.py, whose `from common import ...` means benchmarks/common.py."""
    import benchmarks.common as helpers

    saved = sys.modules.get("common")
    sys.modules["common"] = helpers
    try:
        return importlib.import_module(f"benchmarks.{name}")
    finally:
        if saved is None:
            sys.modules.pop("common", None)
        else:
            sys.modules["common"] = saved


BENCH_SIGNING_KEY = "bf-bench-fleet-signing-key-5e1d07"


def child_env(**extra: str) -> dict[str, str]:
    """The environment for batchfleet processes: ours, without a broker URL that would take over.

    Also byte-compiles the project first, as an installed copy is (see common.compile_bytecode).
    """
    import benchmarks.common as helpers

    helpers.compile_bytecode()
    env = {**os.environ, **extra}
    env.pop("BATCHFLEET_BROKER", None)
    # Fleets are timed signed, as they run (a fleet without a key refuses to start).
    env.pop("BATCHFLEET_SIGNING_KEY_FILE", None)
    env["BATCHFLEET_SIGNING_KEY"] = BENCH_SIGNING_KEY
    return env


@contextmanager
def rabbitmq(base: Path) -> Iterator[str]:
    """BATCHFLEET_BENCH_AMQP_URL, else a private RabbitMQ node for the duration."""
    url = os.environ.get("BATCHFLEET_BENCH_AMQP_URL")
    if url:
        yield url
        return
    from tests.servers import start_rabbitmq

    base.mkdir(parents=True, exist_ok=True)
    print("starting a private RabbitMQ node ...", flush=True)
    node = start_rabbitmq(base)
    _private_node[:] = [node]
    try:
        yield node.url
    finally:
        _private_node.clear()
        node.close()


_private_node: list[Any] = []  # the private RabbitMQ node (tests.servers.RabbitNode), while one runs


def rabbit_pid() -> int | None:
    """The private RabbitMQ node's process (beam.smp runs below it), None for an external server."""
    return _private_node[0].pid if _private_node else None


def rabbit_counters() -> dict[str, int]:
    """The private node's global message counters (messages_received_total, ...), {} without one."""
    if not _private_node:
        return {}
    done = _private_node[0].ctl("eval", "rabbit_global_counters:overview().", timeout=30)
    counters: dict[str, int] = {}
    for key, value in re.findall(r"(messages_[a-z_]+|basic_[a-z_]+|publishers|consumers)\s*=>\s*(\d+)", done.stdout):
        counters[key] = counters.get(key, 0) + int(value)
    return counters


def tree_cpu(pid: int | None) -> float:
    """CPU seconds so far of a live process and its descendants: the live ones, and those that ended
    and were waited for (a worker's job processes end with their job). 0 when it is gone."""
    import psutil

    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def process_cpu(pid: int | None) -> float:
    """CPU seconds so far of one live process alone (its threads, not its children); 0 when it is gone."""
    import psutil

    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children so far (their own children included)."""
    if os.name != "posix":
        return 0.0
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds spent during one timed command: the command's own (by rusage, its children
    included) and each probe's (a long-lived process: a worker, the broker) as the difference of
    its totals before and after. Where the CPU goes, which wall times on a shared machine hide."""

    def __init__(self, **probes: Callable[[], float]) -> None:
        self.probes = probes
        self._start: dict[str, float] = {}
        self._command = 0.0

    def begin(self) -> None:
        self._start = {name: probe() for name, probe in self.probes.items()}
        self._command = children_cpu()

    def end(self, label: str) -> dict[str, float]:
        """{"<label>_cpu_s": the command's, "<probe>_cpu_s": each probe's}, since begin()."""
        figures = {f"{label}_cpu_s": children_cpu() - self._command}
        for name, probe in self.probes.items():
            figures[f"{name}_cpu_s"] = probe() - self._start[name]
        return figures


def median_figures(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over the runs that have it."""
    import statistics

    keys = sorted({key for run in runs for key in run})
    return {key: round(statistics.median(run[key] for run in runs if key in run), 2) for key in keys}


class Worker:
    """`batchfleet worker` as its own process (a service started before the jobs it serves)."""

    def __init__(
        self, url: str, node_id: str, work: Path, processes: int, env: dict[str, str], extra: tuple[str, ...] = ()
    ) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / f"{node_id}.log"
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchfleet", "worker", "--broker", url, "--node-id", node_id,
                 "--processes", str(processes), "--work-dir", str(work / node_id), "--grace", "10",
                 "--store-allow", str(work.parent), *extra],  # a benchmark's stores are beside its worker's folder
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                start_new_session=os.name == "posix",
            )  # fmt: skip

    def __enter__(self) -> Worker:
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the worker listens for jobs: one started later misses the first announcements and
        waits for the coordinator's next one (every 5 s), which a timed run must not include."""
        deadline = time.monotonic() + timeout
        while b" ready (pid " not in self.log.read_bytes()[self._log_start :]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"batchfleet worker did not get ready; see {self.log}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        from tests.fleet_helpers import stop

        stop(self.proc)


def time_cli(args: list[str], log: Path, env: dict[str, str], timeout: float) -> float:
    """Wall seconds of one `batchfleet ...` command, start-up included; raises on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        start = time.perf_counter()
        done = subprocess.Popen(
            [sys.executable, "-m", "batchfleet", *args],
            env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip
        # A blocking wait (with a timeout, Popen.wait polls in sleeps of up to 50 ms).
        timer = threading.Timer(timeout, done.kill)
        timer.start()
        try:
            done.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
    if seconds >= timeout:
        raise RuntimeError(f"batchfleet {args[0]} did not finish in {timeout:.0f} s; see {log}")
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise RuntimeError(f"batchfleet {args[0]} exited {done.returncode}; see {log}:\n{tail}")
    return seconds


class DelayProxy:
    """TCP proxy to 127.0.0.1:target that holds every client->server chunk for `delay` seconds.

    An HTTP request is one chunk, so each S3 call pays `delay` once: a far-away endpoint on loopback.
    """

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, name="delay-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, self.delay), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, 0.0), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while data := src.recv(65536):
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()


def print_summary(summary: dict[str, Any]) -> None:
    """The one-line JSON every benchmark ends with."""
    import json

    from benchmarks.common import machine

    print(json.dumps({**summary, **machine()}))
