"""The child process: loads user code once, then runs mini-batches sent by its supervisor.

Everything crossing the pipe is plain builtins, so nothing here depends on
unpickling our classes after user code has taken over module names.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import BadDataError, BatchfleetError
from common.jobarea import JobArea
from common.parts.rows import RowFormat, is_dataframe, lean_worker_memory
from common.storage import Storage, is_remote, open_storage
from worker.commit.parts import PartWriter, commit_rows
from worker.run.context import MiniBatchContext
from worker.run.entry import EntryPoints, load_entry
from worker.run.outbox import HOLD, Outbox
from worker.run.pipes import readable
from worker.run.userlogs import UserLogs

if TYPE_CHECKING:
    from common.messages import JobConfig


@dataclass(frozen=True)
class ChildJob:
    """What a child needs of the job, as plain values.

    The node validated the job; a child that loaded the models again would spend most of its
    start-up (about 0.1 s of CPU) on pydantic, in every child of every job.
    """

    job_id: str
    store_uri: str
    entry_script: str
    args: list[str]
    environment_variables: dict[str, str]
    logging_level: str
    run_timeout: float
    output_action: str
    append_row_format: RowFormat
    tables: dict[str, str]  # tabular inputs: name -> location
    log_max_bytes: int = 10 * 1024**2
    log_backups: int = 5

    @classmethod
    def of(cls, job: JobConfig, args: list[str] | None = None) -> ChildJob:
        """`args`: the job's, with side inputs' URIs replaced by their local copies (runs in the node)."""
        from common.settings import parse_size  # pydantic: never imported by a child at module level

        settings = job.settings
        return cls(
            job_id=job.job_id,
            store_uri=job.store_uri,
            entry_script=job.entry_script,
            args=list(job.args if args is None else args),
            environment_variables=dict(job.environment_variables),
            logging_level=settings.logging_level,
            run_timeout=settings.run_invocation_timeout,
            output_action=settings.output_action,
            append_row_format=settings.append_row_format,
            tables={b.name: b.uri for b in job.inputs.values() if b.kind == "tabular"},
            log_max_bytes=parse_size(settings.user_log_size),
            log_backups=settings.user_log_count,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _open(uri: str, options: dict[str, Any]) -> Storage:
    """Storage for `uri`; the options model (pydantic) loads only for remote locations."""
    if not is_remote(uri):
        return open_storage(uri)
    from common.storage.options import StorageOptions

    return open_storage(uri, StorageOptions.model_validate(options))


def use_environment(site_dirs: list[str]) -> None:
    """Put the job's environment's packages ahead of the node's (spawn gave us the node's sys.path);
    batchfleet and what it needs stay importable behind them."""
    if not site_dirs:
        return
    import site

    before = list(sys.path)
    for folder in site_dirs:
        site.addsitedir(folder)  # also reads the .pth files of packages installed there
    added = [path for path in sys.path if path not in before]
    sys.path[:] = [*added, *before]


class ResultError(Exception):
    """run() returned something that is not a list, tuple or DataFrame."""


def count_rows(result: Any) -> int:
    """Number of succeeded items a run() result stands for."""
    if result is None:
        raise ResultError(
            "run() returned None; return a list, tuple or pandas DataFrame with one element per succeeded item"
        )
    if isinstance(result, (list, tuple)) or is_dataframe(result):
        return len(result)
    raise ResultError(f"run() returned {type(result).__name__}; return a list, tuple or pandas DataFrame")


def error_line(exc: BaseException) -> str:
    if isinstance(exc, BatchfleetError):
        return exc.line()
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Child:
    """State of one child process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.job = ChildJob(**spec["job"])
        self.node_id: str = spec["node_id"]
        self.process: str = spec["process"]
        # The node process's session token is in every file name: two nodes under one id never share a file.
        session = spec.get("session") or ""
        self.logs = UserLogs(
            Path(spec["log_root"]), self.node_id, self.process, self.job.log_max_bytes, self.job.log_backups, session
        )
        self.options: dict[str, Any] = spec.get("storage_options") or {}
        self.store = _open(self.job.store_uri, self.options)
        name = f"{self.process}.{session}" if session else self.process
        self.parts = PartWriter(self.store, JobArea(self.job.store_uri).node_parts(self.node_id), name)
        self.entry: EntryPoints | None = None
        self.read_batch: Callable[..., Any] | None = None
        self.item_of: Callable[[Any], Any] | None = None
        self.input_stores: dict[str, Storage] = {}

    def prepare(self) -> None:
        """Environment, argv, logs; then load and init the user's code."""
        os.environ["AZUREML_BI_OUTPUT_PATH"] = self.spec["output_dir"]
        os.environ["BATCHFLEET_WORKING_DIR"] = self.spec["working_dir"]
        os.environ["BATCHFLEET_LOG_DIR"] = str(self.logs.entry_log_dir)
        os.environ["BATCHFLEET_AGENT_NAME"] = self.process
        os.environ["BATCHFLEET_NODE_ID"] = self.node_id
        if self.spec.get("gpu") is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.spec["gpu"]  # exactly one device per process
        os.environ.update(self.job.environment_variables)
        Path(self.spec["output_dir"]).mkdir(parents=True, exist_ok=True)
        self.logs.install(self.job.logging_level)
        faulthandler.enable(file=sys.__stderr__ or sys.stderr)
        code_dir = Path(self.spec["code_dir"])
        # Azure ML's working dir semantics: files init() writes go to the job's own folder, never
        # into the code copy other jobs and later children run.
        working_dir = Path(self.spec["working_dir"])
        working_dir.mkdir(parents=True, exist_ok=True)
        os.chdir(working_dir)
        use_environment(self.spec.get("site_packages") or [])
        sys.argv = [self.job.entry_script, *self.job.args, *self.spec.get("predefined_args", [])]
        self.load_tabular()
        self.entry = load_entry(code_dir, self.job.entry_script)
        if self.entry.init is not None:
            self.entry.init()

    def run_task(self, task: dict[str, Any], conn: Outbox) -> dict[str, Any]:
        """One try at one batch: run, then commit; every failure becomes an outcome."""
        assert self.entry is not None
        batch_id, attempt = task["batch_id"], task["attempt"]
        self.logs.batch = batch_id
        started = time.time()
        outcome: dict[str, Any] = {"batch_id": batch_id, "started": started, "total": task["total"]}
        try:
            mini_batch = self.mini_batch(task)
        except BadDataError as exc:
            return self.bad_data(outcome, task, exc, conn)
        try:
            if task.get("tabular"):
                task["total"] = outcome["total"] = len(mini_batch)
            context = MiniBatchContext(batch_id, task.get("partition") or {}, task.get("input", ""), attempt)
            t0 = time.perf_counter()
            result = self.entry.run(mini_batch, context) if self.entry.wants_context else self.entry.run(mini_batch)
            outcome["run_seconds"] = time.perf_counter() - t0
            rows = count_rows(result)
        except BaseException as exc:  # user code may raise anything, SystemExit included
            return self.failed(outcome, exc, attempt)
        self.ran(conn, outcome["run_seconds"])
        t1 = time.perf_counter()
        try:
            self.commit(outcome, task, result, rows)
        except Exception as exc:
            return self.failed(outcome, exc, attempt)
        outcome["commit_seconds"] = time.perf_counter() - t1
        self.logs.batch = None
        return outcome

    def bad_data(
        self, outcome: dict[str, Any], task: dict[str, Any], exc: BadDataError, conn: Outbox
    ) -> dict[str, Any]:
        """Unreadable input: its items failed, which a retry would not change; commit that."""
        self.ran(conn, 0.0)
        self.logs.error(task["batch_id"], task["attempt"], exc.line(), "")
        total = task["total"] or max(len(task.get("items") or []), 1)
        part = self.parts.commit(task["batch_id"], task["attempt"], 0, total, b"")
        outcome.update(
            status="committed",
            total=total,
            succeeded=0,
            failed=total,
            part=part,
            error=exc.line(),
            error_type="BadDataError",
        )
        self.logs.batch = None
        return outcome

    def ran(self, conn: Outbox, run_seconds: float) -> None:
        """Tell the supervisor run() is over, when the commit might otherwise look like a timeout.

        A local commit is one write; sending this for every batch would cost a pipe round trip.
        """
        if self.parts.remote or run_seconds > 0.5 * self.job.run_timeout:
            conn.send(("ran",))

    def load_tabular(self) -> None:
        """Import the table reader and open the tables' storage before user code loads.

        load_entry() hides our packages from sys.modules: importing them later would load a second
        copy (whose BadDataError the except clause in run_task does not catch) or the user's own
        `common`.
        """
        if not self.job.tables:
            return
        lean_worker_memory(os.environ)  # before pyarrow loads: allocators that hand memory back
        from common.messages import Item  # tables load pyarrow anyway; pydantic is cheap beside it
        from worker.run.tables import read_batch, warm_reader

        warm_reader(Path(self.spec["working_dir"]))
        self.read_batch = read_batch
        self.item_of = Item.model_validate
        self.input_stores = {name: _open(uri, self.options) for name, uri in self.job.tables.items()}

    def mini_batch(self, task: dict[str, Any]) -> Any:
        if task.get("tabular"):
            assert self.read_batch is not None, "load_tabular() runs before any tabular batch"
            assert self.item_of is not None
            items = [self.item_of(i) for i in task["items"]]
            storage = self.input_stores.get(task.get("input", ""), self.store)
            return self.read_batch(storage, items, task.get("partition"))
        return list(task["paths"])

    def commit(self, outcome: dict[str, Any], task: dict[str, Any], result: Any, rows: int) -> None:
        fmt = self.job.append_row_format if self.job.output_action == "append_row" else None
        outcome.update(commit_rows(self.parts, task, result, rows, fmt))

    def failed(self, outcome: dict[str, Any], exc: BaseException, attempt: int) -> dict[str, Any]:
        line = error_line(exc)
        tb = "".join(traceback.format_exception(exc))
        self.logs.error(outcome["batch_id"], attempt, line, tb)
        self.logs.batch = None
        outcome.update(status="error", error=line, error_type=type(exc).__name__, traceback=tb)
        return outcome

    def shutdown(self) -> None:
        if self.entry is not None and self.entry.shutdown is not None:
            self.entry.shutdown()


def child_main(conn: Connection, spec: dict[str, Any], progress: Any = None) -> None:
    """Spawn target: prepare, report ready or init failure, then serve tasks until told to stop."""
    # Ctrl-C / CTRL_BREAK reach the whole process group; the supervisor decides when children stop.
    for name in ("SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:
        child = Child(spec)
    except BaseException as exc:
        conn.send(("init_failed", error_line(exc), "".join(traceback.format_exception(exc))))
        return
    try:
        child.prepare()
    except BaseException as exc:
        tb = "".join(traceback.format_exception(exc))
        child.logs.error(None, None, error_line(exc), tb)
        conn.send(("init_failed", error_line(exc), tb))
        return
    gc.freeze()  # user code and its model are loaded for good: the collector need not scan them again
    conn.send(("ready", os.getpid()))
    serve(child, conn, progress)


def serve(child: Child, conn: Connection, progress: Any = None) -> None:
    """Run the tasks the supervisor sends, in order, until told to stop or it goes away.

    `progress` (shared memory) counts the tasks started, so the supervisor can tell which one
    overran its time even while outcomes wait in the outbox.
    """
    outbox = Outbox(conn)
    try:
        _serve(child, conn, outbox, progress)
    except (EOFError, OSError):
        return  # supervisor went away


def _serve(child: Child, conn: Connection, outbox: Outbox, progress: Any) -> None:
    pending: deque[dict[str, Any]] = deque()
    while True:
        if not pending:
            outbox.flush()  # nothing else at hand: every outcome goes out before we wait
            message = conn.recv()
            if message[0] == "stop":
                stop(child, outbox)
                return
            pending.extend(message[1])  # a supervisor tops the pipe up several tasks at a time
            continue
        if progress is not None:
            progress.value += 1
        outcome = child.run_task(pending.popleft(), outbox)
        if not pending and readable(conn, 0):
            message = conn.recv()
            if message[0] == "stop":
                outbox.put(outcome, hold=False)
                stop(child, outbox)
                return
            pending.extend(message[1])
        # Only outcomes of sub-millisecond batches wait, and only while more batches are at hand than
        # outcomes wait: the supervisor tops the pipe up as outcomes come back, so it must hear of
        # the first half of what it sent before the child runs out.
        hold = len(pending) > outbox.waiting + 1 and outcome.get("run_seconds", 1.0) < HOLD / 2
        outbox.put(outcome, hold=hold)


def stop(child: Child, outbox: Outbox) -> None:
    outbox.close()
    try:
        child.shutdown()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
