"""Per-process user logs in the Azure ML layout, written so nothing is lost on a kill, and rotated by
size (the job's user_log_size and user_log_count settings) so a long-lived worker keeps its disk."""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TextIO

from azureml_user.parallel_run import ENTRY_LOGGER


def rotate(path: Path, backups: int) -> None:
    """x.txt -> x.txt.1 -> ... -> x.txt.<backups>; the oldest goes."""
    for index in range(backups, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        newer = path.with_name(f"{path.name}.{index - 1}") if index > 1 else path
        if newer.exists():
            os.replace(newer, older)


class RotatingFile:
    """A line-buffered log file that starts anew past `max_bytes`, keeping `backups` old ones; with
    `fd`, that descriptor (1 or 2) follows it, so native writes land in the current file too."""

    def __init__(self, path: Path, max_bytes: int, backups: int, fd: int | None = None) -> None:
        self.path, self.max_bytes, self.backups, self.fd = path, max_bytes, backups, fd
        self._file = self._open()

    def _open(self) -> TextIO:
        handle = open(self.path, "a", encoding="utf-8", buffering=1)
        if self.fd is not None:
            os.dup2(handle.fileno(), self.fd)
        return handle

    def write(self, text: str) -> int:
        written = self._file.write(text)
        if self._file.tell() > self.max_bytes:
            self._file.close()
            rotate(self.path, self.backups)
            self._file = self._open()
        return written

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


class TaggedStream(io.TextIOBase):
    """A text stream that prefixes each line with node, process and batch, and flushes per line."""

    def __init__(self, raw: TextIO | RotatingFile, tag: Callable[[], str]) -> None:
        self._raw = raw
        self._tag = tag
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        if lines:
            tag = self._tag()
            self._raw.write("".join(f"{tag} {line}\n" for line in lines))
            self._raw.flush()
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._raw.write(f"{self._tag()} {self._partial}")
            self._partial = ""
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class UserLogs:
    """Opens logs/user/{stdout,stderr,entry_script_log,error}/<node>/<process>.<session>.* for one child."""

    def __init__(
        self,
        log_root: Path,
        node_id: str,
        process: str,
        max_bytes: int = 10 * 1024**2,
        backups: int = 5,
        session: str = "",
    ) -> None:
        self.node_id = node_id
        self.process = process
        self.max_bytes = max_bytes
        self.backups = backups
        self.batch: int | None = None
        user = log_root / "user"
        # With the node process's session token: two nodes under one id never write one file.
        name = f"{process}.{session}" if session else process
        self.paths = {
            "stdout": user / "stdout" / node_id / f"{name}.stdout.txt",
            "stderr": user / "stderr" / node_id / f"{name}.stderr.txt",
            "entry": user / "entry_script_log" / node_id / f"{name}.log.txt",
            "error": user / "error" / node_id / f"{name}.txt",
        }
        for path in self.paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)

    def tag(self) -> str:
        batch = "-" if self.batch is None else str(self.batch)
        return f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{self.node_id} {self.process} batch={batch}]"

    def install(self, level: str) -> None:
        """Point fds 1/2, sys.stdout/err and the entry-script logger at the log files."""
        # Native code and faulthandler write to the raw descriptors: they follow each rotation.
        out = RotatingFile(self.paths["stdout"], self.max_bytes, self.backups, fd=1)
        err = RotatingFile(self.paths["stderr"], self.max_bytes, self.backups, fd=2)
        sys.stdout = TaggedStream(out, self.tag)
        sys.stderr = TaggedStream(err, self.tag)
        handler = RotatingFileHandler(
            self.paths["entry"], maxBytes=self.max_bytes, backupCount=self.backups, encoding="utf-8"
        )
        handler.setFormatter(_BatchFormatter(self))
        logger = logging.getLogger(ENTRY_LOGGER)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
        # As in Azure ML, plain `logging` calls land with the prints in logs/user/stdout/.
        printed = logging.StreamHandler(sys.stdout)
        printed.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [printed]
        root.setLevel(level)

    @property
    def entry_log_dir(self) -> Path:
        """EntryScript().log_dir: logs/user/entry_script_log/<node>/, as in Azure ML."""
        return self.paths["entry"].parent

    def error(self, batch: int | None, attempt: int | None, line: str, traceback_text: str) -> None:
        """Append one error with its traceback to this process's error file."""
        where = "init" if batch is None else f"batch {batch} attempt {attempt}"
        path = self.paths["error"]
        if path.exists() and path.stat().st_size > self.max_bytes:
            rotate(path, self.backups)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{self.tag()} {where}: {line}\n{traceback_text}\n")


class _BatchFormatter(logging.Formatter):
    def __init__(self, logs: UserLogs) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._logs = logs

    def format(self, record: logging.LogRecord) -> str:
        batch = "-" if self._logs.batch is None else str(self._logs.batch)
        return f"[{self._logs.node_id} {self._logs.process} batch={batch}] {super().format(record)}"
