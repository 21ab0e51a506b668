"""Progress on the terminal: a live bar on a TTY, plain periodic lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from coordinator.follow.tally import Tally
from coordinator.report.joblogs import progress_line


class Progress:
    """Call update(tally) often; it decides how much to draw."""

    def __init__(
        self,
        total: int,
        started: float,
        stream: TextIO | None = None,
        interval: float = 10.0,
        enabled: bool = True,
        overview: list[str] | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.started = started
        self.interval = interval
        self.enabled = enabled
        self.overview = overview if overview is not None else []
        self._last_line = 0.0
        self._last_overview = 0.0
        self._bar: Any = None
        self._task: Any = None
        if enabled and self.stream.isatty():
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]mini-batches"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TextColumn("{task.fields[rate]} items/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=False,
        )
        self._task = self._bar.add_task("run", total=self.total, failed=0, rate="0")  # type: ignore[attr-defined]
        self._bar.start()  # type: ignore[attr-defined]

    def update(self, tally: Tally) -> None:
        now = time.time()
        if now - self._last_overview >= 5:
            self._last_overview = now
            self.overview.append(progress_line(tally, self.started))
        if not self.enabled:
            return
        if self._bar is not None:
            items = tally.items_succeeded + tally.items_failed
            rate = f"{items / max(now - self.started, 1e-6):.0f}"
            self._bar.update(self._task, completed=tally.done, failed=tally.failed_count, rate=rate)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            print(progress_line(tally, self.started), file=self.stream, flush=True)

    def close(self, tally: Tally) -> None:
        self.overview.append(progress_line(tally, self.started))
        if self._bar is not None:
            self.update(tally)
            self._bar.stop()
        elif self.enabled:
            print(progress_line(tally, self.started), file=self.stream, flush=True)
