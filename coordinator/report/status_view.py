"""What `batchfleet status` and `batchfleet list` show: a job's state record, made readable."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from common.jobarea import STATE_FILE, JobArea
from common.redact import redact
from common.storage import StorageOptions, is_remote, open_storage

# The coordinator rewrites state.json every 2 s while it runs; this much silence means it is gone.
STALE_AFTER = 30.0
SHOWN_BATCH_IDS = 8
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """Every string in a JSON-like value with passwords and keys masked."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item, secrets) for item in value]
    return value


def span(seconds: float) -> str:
    """A short human duration: 42s, 3m 05s, 2h 10m."""
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def ago(at: float | None, now: float) -> str:
    if not at:
        return "never"
    return f"{span(now - at)} ago"


def stamp(at: float | None) -> str:
    if not at:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def stale_for(state: dict[str, Any], now: float) -> float | None:
    """Seconds since a 'running' job's coordinator last wrote its state, when that is too long."""
    if state.get("state") != "running":
        return None
    updated = state.get("updated") or state.get("started") or 0.0
    silent = now - float(updated)
    return silent if silent > STALE_AFTER else None


def is_active(state: dict[str, Any], now: float) -> bool:
    """Still worth watching: submitted (a coordinator acknowledged it), or running and its coordinator
    seen recently."""
    return state.get("state") in ("running", "submitted") and stale_for(state, now) is None


def state_line(state: dict[str, Any], now: float) -> Text:
    name = str(state.get("state") or "unknown")
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "submitted": "cyan"}.get(
        name, ""
    )
    line = Text(name, style=f"bold {style}".strip())
    silent = stale_for(state, now)
    if silent is not None:
        line.append(f"  coordinator not seen for {span(silent)} (stopped or killed?)", style="bold red")
    return line


def _timing(state: dict[str, Any], now: float) -> tuple[str, str]:
    """(elapsed or duration, ETA) for the summary."""
    started = state.get("started")
    finished = state.get("finished")
    if finished and started:
        return f"{span(finished - started)} (finished {ago(finished, now)})", "-"
    elapsed = f"{span(now - started)} (started {stamp(started)})" if started else "-"
    eta = state.get("eta_seconds")
    if state.get("state") != "running" or eta is None or stale_for(state, now) is not None:
        return elapsed, "-"
    return elapsed, span(float(eta))


def summary_table(state: dict[str, Any], now: float) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    total = state.get("batches_total", 0)
    committed, failed = state.get("batches_committed", 0), state.get("batches_failed", 0)
    pending = state.get("batches_pending", max(total - committed - failed, 0))
    # Once a job has ended, what is left will not run: say so rather than "pending".
    left = "pending" if state.get("state") in (None, "running", "submitted") else "never ran"
    elapsed, eta = _timing(state, now)
    rows: list[tuple[str, Text | str]] = [
        ("job", Text(str(state.get("job_id", "?")))),
        ("state", state_line(state, now)),
        ("reason", Text(str(state.get("reason") or "-"))),
        ("mini-batches", f"{committed} done, {failed} failed, {pending} {left} of {total}"
                         + (f" ({state['reused']} reused)" if state.get("reused") else "")),
        ("items", f"{state.get('items_succeeded', 0)} succeeded, {state.get('items_failed', 0)} failed"),
        ("items/s", f"{float(state.get('items_per_second') or 0):.1f}"),
        ("elapsed", elapsed),
        ("ETA", eta),
        ("output", Text(str(state.get("output") or "-"))),
    ]  # fmt: skip
    if state.get("rows") is not None:
        rows.append(("rows merged", str(state["rows"])))
    elif state.get("merged"):
        rows.append(("merged", Text(str(state["merged"]))))
    for label, value in rows:
        table.add_row(label, value)
    return table


def nodes_table(state: dict[str, Any], now: float) -> Table | None:
    nodes: dict[str, dict[str, Any]] = state.get("nodes") or {}
    if not nodes:
        return None
    table = Table(title="nodes", title_justify="left", expand=False)
    for name, justify in (("node", "left"), ("batches", "right"), ("failures", "right"),
                          ("busy", "right"), ("last seen", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    running = state.get("state") == "running"
    for node_id, node in sorted(nodes.items()):
        # A finished job's last heartbeat may still say busy; that is history, not news.
        busy = str(node.get("busy", 0)) if running else "-"
        table.add_row(Text(node_id), str(node.get("batches", 0)), str(node.get("failures", 0)),
                      busy, ago(node.get("last_seen"), now))  # fmt: skip
    return table


def where_raised(traceback_text: str) -> str:
    """'file:line in func' of the innermost frame of a traceback, '' when there is none."""
    found = ""
    for line in traceback_text.splitlines():
        match = _FRAME.match(line)
        if match:
            found = f"{Path(match['file']).name}:{match['line']} in {match['func']}"
    return found


def errors_table(state: dict[str, Any]) -> Table | None:
    groups: list[dict[str, Any]] = state.get("error_groups") or []
    if not groups:
        return None
    table = Table(title="errors (first of each group)", title_justify="left", show_lines=True)
    # Counted per try: a batch retried three times with the same error counts three times.
    table.add_column("times", justify="right")
    table.add_column("error")
    table.add_column("batches")
    for group in groups:
        ids = list(dict.fromkeys(str(i) for i in group.get("batch_ids", [])))
        shown = ", ".join(ids[:SHOWN_BATCH_IDS]) + (
            f" +{len(ids) - SHOWN_BATCH_IDS}" if len(ids) > SHOWN_BATCH_IDS else ""
        )
        kind, message = str(group.get("error_type") or "Error"), str(group.get("message", ""))
        # The message is usually error_line()'s "Type: text" already.
        error = Text(message if message.startswith(f"{kind}:") else f"{kind}: {message}")
        error.stylize("bold", 0, len(kind))
        at = where_raised(str(group.get("traceback") or ""))
        if at:
            error.append(f"\nat {at}", style="dim")
        table.add_row(str(group.get("count", 0)), error, shown)
    return table


def status_view(state: dict[str, Any], now: float) -> RenderableType:
    """Everything `batchfleet status` prints for one job (pass a scrubbed state)."""
    parts: list[RenderableType] = [summary_table(state, now)]
    for extra in (nodes_table(state, now), errors_table(state)):
        if extra is not None:
            parts += [Text(""), extra]
    return Group(*parts)


# --- list -----------------------------------------------------------------------------------------


def _state_uris(store_uri: str, options: StorageOptions) -> Iterator[str]:
    if not is_remote(store_uri):
        root = Path(store_uri)
        if root.is_dir():
            for child in root.iterdir():
                if (child / STATE_FILE).is_file():
                    yield str(child / STATE_FILE)
        return
    # No delimiter listing in the Storage interface: filter a recursive listing to <id>/state.json.
    for info in open_storage(store_uri, options).list(store_uri):
        if info.rel.count("/") == 1 and info.rel.endswith("/" + STATE_FILE):
            yield info.uri


def list_jobs(store_uri: str, options: StorageOptions) -> list[dict[str, Any]]:
    """One summary per job in the store, newest first; an unreadable record shows as such."""
    jobs = []
    for uri in _state_uris(store_uri, options):
        job_id = Path(uri).parent.name if not is_remote(uri) else uri.rsplit("/", 2)[-2]
        try:
            data = json.loads(open_storage(uri, options).read_bytes(uri))
        except (ValueError, OSError):
            data = {"state": "unreadable"}
        jobs.append({
            "job_id": job_id, "state": data.get("state"), "batches_total": data.get("batches_total"),
            "batches_committed": data.get("batches_committed"), "batches_failed": data.get("batches_failed"),
            "started": data.get("started"), "updated": data.get("updated"), "finished": data.get("finished"),
        })  # fmt: skip
    return sorted(jobs, key=lambda job: -(job["started"] or 0.0))


def list_table(jobs: list[dict[str, Any]], now: float) -> Table:
    table = Table()
    for name in ("job", "state", "batches", "started"):
        table.add_column(name)
    for job in jobs:
        done = (job["batches_committed"] or 0) + (job["batches_failed"] or 0)
        batches = f"{done}/{job['batches_total']}" if job["batches_total"] is not None else "-"
        if job["batches_failed"]:
            batches += f" ({job['batches_failed']} failed)"
        state = str(job["state"])
        if stale_for(job, now) is not None:
            state += " (coordinator not seen)"
        table.add_row(Text(job["job_id"]), Text(state), batches, stamp(job["started"]))
    return table


def job_exists(store_uri: str, job_id: str, options: StorageOptions) -> bool:
    """The job has a record in the store (job.json from submission, or state.json)."""
    area = JobArea.of(store_uri, job_id)
    for uri in (area.job_file, area.state):
        if open_storage(uri, options).exists(uri):
            return True
    return False
