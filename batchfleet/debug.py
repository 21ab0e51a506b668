"""`batchfleet debug`: one mini-batch through init() and run() in this process, so pdb works.

No broker, no child process, no store: the plan is made in memory, inputs are read where
they are (or downloaded into a temp folder), and the entry script's output folder is a temp
folder too. Everything used after the entry script is loaded is imported at the top, because
loading it hides our packages from sys.modules (a user's common.py must win).
"""

from __future__ import annotations

import bdb
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from azureml_user.parallel_run import ENTRY_LOGGER
from common.errors import BatchfleetError, UsageError
from common.messages import BatchMessage, InputBinding, Item, JobConfig
from common.parts.rows import encode_part, is_dataframe
from common.settings import predefined_args
from common.storage import StorageOptions, is_remote, join_uri, open_storage
from coordinator.plan.files import plan_batches
from coordinator.plan.submit import new_job_id
from coordinator.plan.tables import plan_tabular
from coordinator.spec.loader import JobSpec, Resolved
from worker.download.downloader import Downloader
from worker.run.child import ResultError, count_rows, error_line
from worker.run.context import MiniBatchContext
from worker.run.entry import OWN_PACKAGES, EntryPoints, load_entry
from worker.run.tables import read_batch

SHOWN_ROWS = 20
SHOWN_ITEMS = 50
NODE_ID = "debug"
PROCESS = "process001"


@dataclass
class DebugRequest:
    """Which batch to run and where to print."""

    batch: int = 0
    items: list[str] | None = None
    storage_options: StorageOptions = field(default_factory=StorageOptions)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    folders: Folders | None = None  # made by the caller when outputs were bound into it (unbound_outputs)


@dataclass
class Loaded:
    """A batch as run() receives it, and how the worker would count its items."""

    message: BatchMessage
    mini_batch: Any
    total: int
    missing: int = 0
    missing_error: str | None = None


@dataclass(frozen=True)
class Folders:
    """The temp stand-ins for a node's folders."""

    root: Path
    output_dir: Path
    working_dir: Path
    log_dir: Path

    @classmethod
    def make(cls) -> Folders:
        root = Path(tempfile.mkdtemp(prefix="bf-debug-"))
        folders = cls(root, root / "output", root / "wd", root / "logs" / "user")
        for folder in (folders.output_dir, folders.working_dir, folders.log_dir):
            folder.mkdir(parents=True)
        return folders

    @property
    def outputs(self) -> Path:
        """Where outputs the command line left unbound go (see unbound_outputs)."""
        return self.root / "outputs"


def unbound_outputs(spec: JobSpec, given: list[str], folders: Folders) -> list[str]:
    """`NAME=PATH` bindings into the temp folder for the spec's outputs with no --output and no path in
    the spec: debug writes nothing there, but the entry script's arguments may name them."""
    named = {text.partition("=")[0].strip() for text in given}
    return [
        f"{name}={folders.outputs / name}"
        for name, port in spec.outputs.items()
        if name not in named and (port.path is None or port.path.startswith("azureml:"))
    ]


# --- planning -------------------------------------------------------------------------------------


def debug_job(spec: JobSpec, resolved: Resolved, root: Path) -> JobConfig:
    """The job as coordinator.runner.build_job makes it in embedded mode, with a temp store."""
    job_id = new_job_id(spec.name)
    return JobConfig(
        job_id=job_id, name=spec.name, created_at=time.time(), code_uri=str(spec.code_dir),
        entry_script=spec.entry_script, args=resolved.args, inputs=resolved.inputs,
        input_data=spec.input_data, outputs=resolved.outputs, output_data=spec.output_data,
        output_uri=resolved.output_uri,
        store_uri=str(root / "store" / job_id), settings=resolved.settings, environment=spec.environment,
        environment_variables=spec.environment_variables,
    )  # fmt: skip


def pick_batch(job: JobConfig, batch: int, options: StorageOptions) -> BatchMessage:
    """Mini-batch `batch` of the plan (planning stops there)."""
    if batch < 0:
        raise UsageError(f"--batch {batch}: mini-batch numbers start at 0")
    count = 0
    for message in plan_batches(job, options):
        if message.batch_id == batch:
            return message
        count += 1
    raise UsageError(f"--batch {batch}: the job has {count} mini-batches (0 to {count - 1})",
                     "pick one of those, or pass --items PATH...")  # fmt: skip


def items_batch(job: JobConfig, paths: list[str], options: StorageOptions) -> BatchMessage:
    """One batch of the given files, for the first mini-batched input (tables: whole files)."""
    name = job.input_data[0]
    binding = job.inputs[name]
    uris = [path if is_remote(path) else os.path.abspath(path) for path in paths]
    for path, uri in zip(paths, uris, strict=True):
        if not is_remote(uri) and not os.path.isfile(uri):
            raise UsageError(f"--items {path}: no such file", "pass files of the input, one or more")
    items: list[Item] = []
    if binding.kind == "tabular":
        whole_files = job.settings.model_copy(update={"partition_keys": None})
        for uri in uris:
            single = InputBinding(name=name, uri=uri, kind="tabular", mode=binding.mode)
            for plan in plan_tabular(open_storage(uri, options), single, whole_files):
                items += plan.items
    else:
        used: set[str] = set()
        for index, uri in enumerate(uris):
            base = uri.rstrip("/").rsplit("/", 1)[-1] if is_remote(uri) else os.path.basename(uri)
            # Downloads land in one folder: keep same-named files apart.
            local = base if base not in used else f"{index}/{base}"
            used.add(base)
            size = None if is_remote(uri) else os.path.getsize(uri)
            items.append(Item(uri=uri, name=local, size=size))
    return BatchMessage(job_id=job.job_id, batch_id=0, input=name, items=items)


def load_batch(job: JobConfig, message: BatchMessage, root: Path, options: StorageOptions) -> Loaded:
    """Read a table's rows, or make the batch's files local, as the worker does."""
    binding = job.inputs[message.input or job.input_data[0]]
    if binding.kind == "tabular":
        storage = open_storage(message.items[0].uri, options) if message.items else open_storage(binding.uri)
        frame = read_batch(storage, message.items, message.partition)
        return Loaded(message, frame, total=len(frame))
    downloader = Downloader(root / "node", options, threads=8)
    try:
        fetched = downloader.fetch(job.job_id, binding, message, 1)
    finally:
        downloader.close()
    return Loaded(message, list(fetched.paths), len(message.items), fetched.missing, fetched.missing_error)


# --- the user's process state ---------------------------------------------------------------------


@contextmanager
def user_process(job: JobConfig, folders: Folders) -> Iterator[None]:
    """argv, environment, cwd and logging as a worker child sets them; all restored after."""
    saved_argv, saved_path, saved_cwd = list(sys.argv), list(sys.path), os.getcwd()
    saved_env = dict(os.environ)
    saved_modules = {n: m for n, m in sys.modules.items() if n.split(".", 1)[0] in OWN_PACKAGES}
    entry_logger, root_logger = logging.getLogger(ENTRY_LOGGER), logging.getLogger()
    saved_logging = (
        list(entry_logger.handlers),
        entry_logger.level,
        entry_logger.propagate,
        root_logger.level,
    )
    os.environ.update({
        "AZUREML_BI_OUTPUT_PATH": str(folders.output_dir), "BATCHFLEET_WORKING_DIR": str(folders.working_dir),
        "BATCHFLEET_LOG_DIR": str(folders.log_dir), "BATCHFLEET_AGENT_NAME": PROCESS,
        "BATCHFLEET_NODE_ID": NODE_ID,
    })  # fmt: skip
    os.environ.update(job.environment_variables)
    # EntryScript().logger goes to the terminal here, not to logs/user/.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    entry_logger.handlers[:] = [handler]
    entry_logger.setLevel(job.settings.logging_level)
    entry_logger.propagate = False
    root_logger.setLevel(job.settings.logging_level)
    sys.argv = [job.entry_script, *job.args, *predefined_args(job.settings, job.entry_script, job.input_data)]
    os.chdir(folders.working_dir)  # as a worker child: the code folder is not the working dir
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        sys.argv[:], sys.path[:] = saved_argv, saved_path
        os.environ.clear()
        os.environ.update(saved_env)
        # The user's modules that took our names go; ours come back.
        for name in [n for n in sys.modules if n.split(".", 1)[0] in OWN_PACKAGES]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        entry_logger.handlers[:], entry_logger.level, entry_logger.propagate = saved_logging[:3]
        root_logger.setLevel(saved_logging[3])


# --- running --------------------------------------------------------------------------------------


class UserCodeFailed(Exception):
    """init() or run() raised; the traceback has been printed."""


def _call(what: str, fn: Any, *args: Any) -> tuple[Any, float]:
    """fn(*args) and its duration; a failure prints the traceback from the user's frame on."""
    t0 = time.perf_counter()
    try:
        return fn(*args), time.perf_counter() - t0
    except (KeyboardInterrupt, BatchfleetError):
        raise  # Ctrl-C, and our own one-line errors (a missing run(), a syntax error)
    except bdb.BdbQuit:
        print(f"debugger quit during {what}", file=sys.stderr)
        raise UserCodeFailed(what) from None
    except BaseException as exc:  # user code may raise anything, SystemExit included
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        sys.stdout.flush()
        print(f"\n{what} raised {error_line(exc)}; traceback:", file=sys.stderr)
        traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
        raise UserCodeFailed(what) from None


def run_user_code(job: JobConfig, loaded: Loaded, out: TextIO) -> tuple[Any, dict[str, float]]:
    """Load the entry script, init(), run(mini_batch); returns run()'s result and timings."""
    timings: dict[str, float] = {}
    code_dir = Path(job.code_uri)
    entry: EntryPoints
    entry, timings["import"] = _call("importing the entry script", load_entry, code_dir, job.entry_script)
    if entry.init is not None:
        out.write("calling init()\n")
        out.flush()
        _, timings["init"] = _call("init()", entry.init)
    message = loaded.message
    args: tuple[Any, ...] = (loaded.mini_batch,)
    if entry.wants_context:
        args += (MiniBatchContext(message.batch_id, message.partition or {}, message.input, 1),)
    out.write(f"calling run() on mini-batch {message.batch_id}\n")
    out.flush()
    result, timings["run"] = _call("run()", entry.run, *args)
    if entry.shutdown is not None:
        _, timings["shutdown"] = _call("shutdown()", entry.shutdown)
    return result, timings


# --- printing -------------------------------------------------------------------------------------


def _item_text(item: Item) -> str:
    if item.offset is not None:
        return f"{item.uri} bytes {item.offset}+{item.length}" + (f" ({item.rows} rows)" if item.rows else "")
    if item.row_groups is not None:
        return f"{item.uri} row groups {item.row_groups}" + (f" ({item.rows} rows)" if item.rows else "")
    return item.uri


def print_batch(loaded: Loaded, out: TextIO) -> None:
    message = loaded.message
    where = f", partition {message.partition}" if message.partition else ""
    out.write(f"mini-batch {message.batch_id} of input {message.input}{where}: {len(message.items)} items\n")
    for item in message.items[:SHOWN_ITEMS]:
        out.write(f"  {_item_text(item)}\n")
    if len(message.items) > SHOWN_ITEMS:
        out.write(f"  ... {len(message.items) - SHOWN_ITEMS} more\n")
    if is_dataframe(loaded.mini_batch):
        out.write(f"run() gets a DataFrame of {len(loaded.mini_batch)} rows\n")
    if loaded.missing:
        out.write(f"could not fetch {loaded.missing} items: {loaded.missing_error}\n")


def print_rows(result: Any, rows: int, out: TextIO) -> None:
    shown = min(rows, SHOWN_ROWS)
    more = f", first {shown} shown" if rows > shown else ""
    noun = "row" if rows == 1 else "rows"
    out.write(f"\nrun() returned {type(result).__name__} with {rows} {noun}{more}:\n")
    if is_dataframe(result):
        if rows:
            out.write(result.head(SHOWN_ROWS).to_string() + "\n")
        return
    for row in list(result[:SHOWN_ROWS]):
        out.write(f"  {row!r}\n")


def print_counts(loaded: Loaded, rows: int, out: TextIO) -> None:
    """Counts as worker.run.child commits them: rows stand for succeeded items, capped by the batch."""
    total = loaded.total
    succeeded = min(rows, total - loaded.missing)
    out.write(f"as the worker counts it: {succeeded} succeeded, {total - succeeded} failed of {total} items\n")
    if rows > total:
        out.write(f"  note: run() returned {rows} rows for {total} items; counts are capped at the batch size\n")


def print_outputs(job: JobConfig, result: Any, folders: Folders, out: TextIO) -> bool:
    """Where output would go in a real run; False when the result cannot be written as a part."""
    settings = job.settings
    ok = True
    out.write("\noutputs:\n")
    if settings.output_action == "append_row":
        merged = join_uri(job.output_uri, settings.merged_file_name())
        try:
            fmt = settings.append_row_format
            size = f"{len(encode_part(result, fmt))} bytes as {fmt}"
        except Exception as exc:  # the commit would fail the same way
            size, ok = f"cannot be written: {error_line(exc)}", False
        out.write(f"  append_row: this batch's rows ({size}) would be merged into {merged}\n")
    else:
        out.write("  summary_only: returned rows are counted, not written\n")
    written = sorted(p for p in folders.output_dir.rglob("*") if p.is_file())
    here = f"{folders.output_dir} (temp)" if written else "a temp folder, no files written"
    out.write(f"  EntryScript().output_dir: {here}; {job.output_uri} in a real run\n")
    for path in written[:SHOWN_ROWS]:
        out.write(f"    {path.relative_to(folders.output_dir).as_posix()} ({path.stat().st_size} bytes)\n")
    if len(written) > SHOWN_ROWS:
        out.write(f"    ... {len(written) - SHOWN_ROWS} more files\n")
    return ok


# --- the command ----------------------------------------------------------------------------------


def run_debug(spec: JobSpec, resolved: Resolved, request: DebugRequest) -> int:
    """Plan, pick one batch, run it here; returns the exit code (1 when user code failed)."""
    out, options = request.out, request.storage_options
    folders = request.folders or Folders.make()
    keep = False
    try:
        job = debug_job(spec, resolved, folders.root)
        if request.items:
            message = items_batch(job, request.items, options)
        else:
            message = pick_batch(job, request.batch, options)
        loaded = load_batch(job, message, folders.root, options)
        print_batch(loaded, out)
        out.flush()
        try:
            with user_process(job, folders):
                result, timings = run_user_code(job, loaded, out)
        except UserCodeFailed:
            keep = _has_files(folders)
            return 1
        code = report_result(job, loaded, result, timings, folders, out)
        keep = _has_files(folders)
        return code
    finally:
        _finish(folders, keep, out)


def report_result(job: JobConfig, loaded: Loaded, result: Any, timings: dict[str, float], folders: Folders,
                  out: TextIO) -> int:  # fmt: skip
    """Rows, counts, timing and outputs; 1 when the worker would count this try as failed."""
    out.write("\ntiming: " + ", ".join(f"{name} {seconds:.3f}s" for name, seconds in timings.items()) + "\n")
    try:
        rows = count_rows(result)
    except ResultError as exc:
        out.write(f"the worker would count this try as failed: {exc}\n")
        return 1
    print_rows(result, rows, out)
    print_counts(loaded, rows, out)
    ok = print_outputs(job, result, folders, out)
    return 0 if ok else 1


def _has_files(folders: Folders) -> bool:
    return any(p.is_file() for d in (folders.output_dir, folders.log_dir, folders.outputs) for p in d.rglob("*"))


def _finish(folders: Folders, keep: bool, out: TextIO) -> None:
    if keep:
        out.write(f"kept files the entry script wrote: {folders.root}\n")
    else:
        shutil.rmtree(folders.root, ignore_errors=True)
    out.flush()
