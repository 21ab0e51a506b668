"""Child processes for one job on one node: spawn, feed, time out, restart.

One supervising thread per child; user code only ever runs in the children,
so a hung or crashed run() costs that child, never the node.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.spawn as mp_spawn
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from common.policy import init_gives_up, pipeline_depth
from worker.run.child import child_main
from worker.run.childenv import secrets_withheld
from worker.run.pipes import readable
from worker.run.standby import Standby

log = logging.getLogger(__name__)

Outcome = dict[str, Any]
_EXECUTABLE_LOCK = threading.Lock()


@dataclass
class Task:
    """One try at one batch, ready to run (inputs already local)."""

    batch_id: int
    attempt: int
    payload: dict[str, Any]
    delivery: Any = None
    download_seconds: float = 0.0
    received: float = field(default_factory=time.time)
    sent: float = 0.0
    cleanup: Callable[[], None] | None = None
    seq: int = 0  # its place among the tasks sent to the current child (1, 2, ...)


@dataclass
class PoolConfig:
    processes: int
    run_timeout: float
    commit_timeout: float
    init_max_try: int
    spec_for: Callable[[str], dict[str, Any]]
    on_outcome: Callable[[Task, Outcome, str], None]
    on_init_failed: Callable[[str, str], None]
    # The node's moving average of a batch's seconds (None until one finished): sets the pipe depth.
    batch_seconds: Callable[[], float | None] = lambda: None
    python: str | None = None  # the job's environment's interpreter; None: this one
    standby: Standby | None = None  # interpreters started ahead (this one's); taken before spawning


class _Slot:
    """A supervised child process slot."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.stash: deque[Outcome] = deque()  # outcomes that came with the head's, in task order
        self.progress: Any = None  # shared with the child: how many tasks it has started
        self.sent = 0  # tasks sent to the current child

    def started(self) -> int:
        return int(self.progress.value) if self.progress is not None else 0

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join(timeout=10)
        if self.conn is not None:
            self.conn.close()
        self.process = None
        self.conn = None
        self.stash.clear()
        self.progress = None
        self.sent = 0

    def terminate(self) -> None:
        """Kill the child from another thread; the supervising thread cleans up when it sees EOF."""
        process = self.process
        if process is not None and process.is_alive():
            process.kill()


class ChildPool:
    """Runs tasks on `processes` spawned children."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._ctx = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self.ready = threading.Event()  # some child has loaded the user code and run init()
        self._lock = threading.Lock()
        self._init_failures = 0
        self._gave_up = False
        self._busy = 0
        self._slots = [_Slot(f"process{i + 1:03d}") for i in range(config.processes)]
        self._threads = [
            threading.Thread(target=self._supervise, args=(slot,), name=f"bf-{slot.name}", daemon=True)
            for slot in self._slots
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, task: Task) -> None:
        self.tasks.put(task)

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def gave_up(self) -> bool:
        return self._gave_up

    def stop(self, grace: float = 10.0) -> None:
        """Ask children to shut down (shutdown() runs), then kill what is left."""
        self._stopping.set()
        for _ in self._threads:
            self.tasks.put(None)
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.1))
        self.kill_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def kill_all(self) -> None:
        self._stopping.set()
        for slot in self._slots:
            slot.terminate()

    def drain(self) -> list[Task]:
        """Tasks not yet handed to a child (to give back to the broker)."""
        left: list[Task] = []
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                return left
            if task is not None:
                left.append(task)

    def _supervise(self, slot: _Slot) -> None:
        """Keep up to `depth` tasks in the child's pipe so it never waits on a round trip."""
        inflight: deque[Task] = deque()
        resend: deque[Task] = deque()
        while True:
            if slot.process is None:
                if self._stopping.is_set():
                    break
                if not self._start_child(slot):
                    if self._gave_up:
                        break
                    continue
                resend.extendleft(reversed(inflight))
                inflight.clear()
            if not self._fill(slot, inflight, resend):
                break
            self._await_head(slot, inflight, resend)
        for task in (*inflight, *resend):
            self.tasks.put(task)  # never started: another slot, or drain(), takes it
        self._stop_child(slot)

    def _fill(self, slot: _Slot, inflight: deque[Task], resend: deque[Task]) -> bool:
        """Top the child's pipe up to `depth` tasks; False when told to stop with nothing in flight.

        Deep pipes are topped up once half has drained, in one message: a message per task
        costs the node a system call and a pickling each, shared with every other thread.
        """
        assert slot.conn is not None
        depth = pipeline_depth(self.config.batch_seconds())
        if inflight and len(inflight) > depth // 2:
            return True
        batch: list[Task] = []
        stop = False
        while len(inflight) + len(batch) < depth and not self._stopping.is_set():
            if resend:
                task: Task | None = resend.popleft()
            else:
                try:
                    task = self.tasks.get(block=not inflight and not batch)
                except queue.Empty:
                    break
            if task is None:
                stop = True
                break
            batch.append(task)
        if batch and not self._send(slot, inflight, resend, batch):
            return True  # _await_head sees the death and charges the running head
        if stop or self._stopping.is_set():
            self._stopping.set()
            return bool(inflight)
        return True

    def _send(self, slot: _Slot, inflight: deque[Task], resend: deque[Task], batch: list[Task]) -> bool:
        assert slot.conn is not None
        try:
            slot.conn.send(("run", [task.payload for task in batch]))
        except (OSError, ValueError):
            resend.extendleft(reversed(batch))
            if not inflight:  # died while idle: nothing to charge
                slot.kill()
            return False
        now = time.monotonic()
        for task in batch:
            slot.sent += 1
            task.sent, task.seq = now, slot.sent
        inflight.extend(batch)
        return True

    def _await_head(self, slot: _Slot, inflight: deque[Task], resend: deque[Task]) -> None:
        """Wait for the oldest task in flight; kill the child when it overruns."""
        if not inflight or slot.conn is None:
            return
        head = inflight[0]
        with self._lock:
            self._busy += 1
        try:
            outcome = self._result(slot, head)
        finally:
            with self._lock:
                self._busy -= 1
        inflight.popleft()
        blamed = outcome.pop("culprit", None)
        culprit = next((t for t in inflight if t.seq == blamed), None) if blamed is not None else None
        if culprit is not None:
            # The head had finished, but its outcome waited in the child and was lost with it: the
            # batch the child was running takes the blame, the others run again.
            inflight.remove(culprit)
            inflight.appendleft(head)
            head, outcome = culprit, {**outcome, "batch_id": culprit.batch_id, "total": culprit.payload["total"]}
        if slot.process is None:  # killed or died: the rest never started (or must run again)
            resend.extend(inflight)
            inflight.clear()
        elif inflight:
            inflight[0].sent = time.monotonic()
        self.config.on_outcome(head, outcome, slot.name)

    def _start_child(self, slot: _Slot) -> bool:
        """Spawn and wait for init; count failures; False when init failed."""
        spec = self.config.spec_for(slot.name)
        with self._lock:
            self._busy += 1  # a child being started or in init() is working, not stalled
        try:
            slot.process, slot.conn, slot.progress = self._spawn(slot.name, spec)
            message = self._wait_ready(slot)
        finally:
            with self._lock:
                self._busy -= 1
        if message is not None and message[0] == "ready":
            log.debug("%s ready (pid %s)", slot.name, message[1])
            self.ready.set()
            return True
        line, tb = (message[1], message[2]) if message else (self._death(slot), "")
        slot.kill()
        self._count_init_failure(slot.name, line, tb)
        return False

    def _spawn(self, name: str, spec: dict[str, Any]) -> tuple[BaseProcess, Connection, Any]:
        standby = self.config.standby if self.config.python is None else None
        taken = standby.take(name, spec) if standby is not None else None
        if taken is not None:
            return taken
        progress = self._ctx.RawValue("q", 0)
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=child_main, args=(child, spec, progress), name=f"batchfleet-{name}")
        if self.config.python is None:
            with secrets_withheld():
                process.start()
        else:
            # The spawn start method's interpreter is one setting for the whole process: a job with an
            # environment of its own sets it only while its child starts.
            with _EXECUTABLE_LOCK:
                default = mp_spawn.get_executable()
                mp_spawn.set_executable(self.config.python)
                try:
                    with secrets_withheld():
                        process.start()
                finally:
                    mp_spawn.set_executable(default)
        child.close()
        return process, parent, progress

    def _wait_ready(self, slot: _Slot) -> tuple[Any, ...] | None:
        assert slot.conn is not None
        while not self._stopping.is_set():
            try:
                if slot.conn.poll(0.5):
                    return slot.conn.recv()  # type: ignore[no-any-return]
            except (EOFError, OSError):
                return None
            if slot.process is not None and not slot.process.is_alive() and not slot.conn.poll(0):
                return None
        return ("stopping", "node is stopping", "")

    def _count_init_failure(self, name: str, line: str, tb: str) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            self._init_failures += 1
            give_up = init_gives_up(self._init_failures, self.config.init_max_try) and not self._gave_up
            if give_up:
                self._gave_up = True
        log.warning("%s: init failed (%d of %d): %s", name, self._init_failures, self.config.init_max_try, line)
        if give_up:
            self._stopping.set()
            self.config.on_init_failed(line, tb)
        else:
            time.sleep(min(0.5 * self._init_failures, 5))

    def _result(self, slot: _Slot, task: Task) -> Outcome:
        """The head task's outcome; run_invocation_timeout is enforced by killing the child."""
        if slot.stash:
            return slot.stash.popleft()
        assert slot.conn is not None
        base: Outcome = {"batch_id": task.batch_id, "started": time.time(), "total": task.payload["total"]}
        try:
            overran = self._overran(slot, task)
            if overran is not None:
                slot.kill()
                outcome = self._error(
                    base,
                    "TimeoutError",
                    f"run() exceeded run_invocation_timeout={self.config.run_timeout:g}s; "
                    "the process was killed and restarted",
                )
                return outcome if overran == task.seq else {**outcome, "culprit": overran}
            message = slot.conn.recv()
            if message[0] == "ran" and readable(slot.conn, self.config.commit_timeout):
                message = slot.conn.recv()
            if message[0] == "done":
                head, *rest = message[1]
                slot.stash.extend(rest)
                return head  # type: ignore[no-any-return]
            slot.kill()
            return self._error(base, "TimeoutError", "committing the batch's results timed out")
        except (EOFError, OSError):
            running = slot.started()  # the task it died in; outcomes before it may have died with it
            reason = self._death(slot)
            slot.kill()
            outcome = self._error(base, "ProcessDied", reason)
            return outcome if running <= task.seq else {**outcome, "culprit": running}

    def _overran(self, slot: _Slot, head: Task) -> int | None:
        """Wait for the child's next message; None when it came, else which task overran its time.

        A short batch's outcome may wait in the child behind the next batch (worker.run.outbox). When
        the head's time is up but the child has started later tasks, the one it is on gets a full
        timeout of its own, and the blame if it overruns too.
        """
        assert slot.conn is not None
        deadline = head.sent + self.config.run_timeout
        watching = 0
        while not readable(slot.conn, max(deadline - time.monotonic(), 0)):
            started = slot.started()
            if started <= head.seq or started == watching:
                return max(started, head.seq)
            watching = started
            deadline = time.monotonic() + self.config.run_timeout
        return None

    @staticmethod
    def _error(base: Outcome, kind: str, line: str) -> Outcome:
        return {**base, "status": "error", "error": f"{kind}: {line}", "error_type": kind, "traceback": ""}

    @staticmethod
    def _death(slot: _Slot) -> str:
        if slot.process is None:
            return "the process exited"
        slot.process.join(timeout=5)
        code = slot.process.exitcode
        if code is not None and code < 0:
            return f"the process was killed by signal {-code} (crash, OOM kill or kill -9)"
        return f"the process exited with code {code} during run()"

    def _stop_child(self, slot: _Slot) -> None:
        if slot.conn is None or slot.process is None:
            return
        try:
            slot.conn.send(("stop",))
            slot.process.join(timeout=10)
        except (EOFError, OSError):
            pass
        slot.kill()
