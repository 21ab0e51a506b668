"""`batchfleet status`, `batchfleet list` and `batchfleet cancel`: a job's state from the store."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from typing import Any

from batchfleet.commands.common import add_connection_flags, add_log_flag, storage_options, store_uri

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# `status` exits with the job's state, for schedulers and scripts (README, "Exit codes").
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}
STILL_RUNNING = 4  # running, submitted (no coordinator has written its state yet), or its coordinator is gone
WAIT_POLL = 2.0  # seconds between reads with --wait: the coordinator rewrites the state every 2 s


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = sub.add_parser(
        "status",
        help="a job's state, progress, nodes and errors",
        description="Exit code: 0 succeeded, 1 failed, 3 cancelled, 4 still running (or submitted, or its "
        "coordinator is gone), 2 no such job or a bad flag.",
    )
    status.add_argument("job", help="job id (as printed by `batchfleet run` or `batchfleet list`)")
    status.add_argument("--json", action="store_true", help="print the state record as JSON")
    status.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                        help="redraw every SECONDS until the job ends (Ctrl-C stops watching)")  # fmt: skip
    status.add_argument("--wait", action="store_true", help="block until the job ends (or its coordinator is gone)")
    _store_flags(status)
    status.set_defaults(handler=cmd_status)
    jobs = sub.add_parser("list", help="jobs in the store, newest first")
    jobs.add_argument("--json", action="store_true", help="print the jobs as JSON")
    _store_flags(jobs)
    jobs.set_defaults(handler=cmd_list)
    cancel = sub.add_parser("cancel", help="ask a running job's coordinator to stop it")
    cancel.add_argument("job", help="job id")
    _store_flags(cancel)
    cancel.set_defaults(handler=cmd_cancel)


def _store_flags(parser: argparse.ArgumentParser) -> None:
    add_connection_flags(parser)
    add_log_flag(parser)


def _job_id(text: str) -> str:
    from common.errors import UsageError

    if not _JOB_ID.fullmatch(text) or ".." in text:
        raise UsageError(
            f"'{text}' is not a job id", "job ids look like name-20240101-120000-ab12; see `batchfleet list`"
        )
    return text


def _secrets() -> list[str]:
    from common.redact import secret_values_from_env

    return secret_values_from_env(os.environ)


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(console.width, 120))
    return console


def _read(ns: argparse.Namespace, job_id: str) -> dict[str, Any]:
    from common.errors import StorageError, UsageError
    from coordinator.report.state import read_state
    from coordinator.report.status_view import job_exists, scrub

    store, options = store_uri(ns), storage_options(ns)
    try:
        state = read_state(store, job_id, options)
    except ValueError as exc:  # a half-written or foreign file
        raise StorageError(f"the state record of job {job_id} is not valid JSON: {exc}") from exc
    except UsageError:
        if not job_exists(store, job_id, options):
            raise
        # Submitted: its coordinator writes the first state once the plan is published.
        state = {"job_id": job_id, "state": "submitted", "reason": "waiting for a coordinator to plan it"}
    return dict(scrub(state, _secrets()))


def exit_code(state: dict[str, Any]) -> int:
    """0 succeeded, 1 failed, 3 cancelled, 4 anything else (running, submitted, coordinator gone)."""
    return EXIT_CODES.get(str(state.get("state")), STILL_RUNNING)


def cmd_status(ns: argparse.Namespace) -> int:
    from common.errors import UsageError

    job_id = _job_id(ns.job)
    if ns.watch is not None and ns.watch <= 0:
        raise UsageError(f"--watch {ns.watch:g}: the interval must be positive", "for example --watch 2")
    state = _read(ns, job_id)
    try:
        if ns.watch is not None:
            state = _watch(ns, job_id, state)
        elif ns.wait:
            state = _wait(ns, job_id, state)
            _show(state, ns.json)
        else:
            _show(state, ns.json)
    except KeyboardInterrupt:
        state = _read(ns, job_id)  # stopping the watch is not an error: the code says where the job is
    _note_gone(job_id, state)
    return exit_code(state)


def _show(state: dict[str, Any], as_json: bool) -> None:
    from coordinator.report.status_view import status_view

    if as_json:
        print(json.dumps(state, indent=1))
        return
    _console().print(status_view(state, time.time()))


def _wait(ns: argparse.Namespace, job_id: str, state: dict[str, Any]) -> dict[str, Any]:
    """Block until the job is no longer running (or its coordinator went silent)."""
    from coordinator.report.status_view import is_active

    while is_active(state, time.time()):
        time.sleep(WAIT_POLL)
        state = _read(ns, job_id)
    return state


def _note_gone(job_id: str, state: dict[str, Any]) -> None:
    """A job left 'running' by a coordinator that stopped writing: say so, and what to do."""
    import sys

    from coordinator.report.status_view import span, stale_for

    silent = stale_for(state, time.time())
    if silent is not None:
        print(
            f"batchfleet: job {job_id} is not finished but its coordinator was last seen {span(silent)} ago; "
            f"carry it on with `batchfleet follow {job_id}`",
            file=sys.stderr,
        )


def _watch(ns: argparse.Namespace, job_id: str, state: dict[str, Any]) -> dict[str, Any]:
    """Redraw until the job is no longer running (or its coordinator went silent); the last state read."""
    from coordinator.report.status_view import is_active, status_view

    if ns.json:
        # JSON Lines: one record per poll, for scripts that follow a job.
        while True:
            print(json.dumps(state), flush=True)
            if not is_active(state, time.time()):
                return state
            time.sleep(ns.watch)
            state = _read(ns, job_id)
    from rich.live import Live

    with Live(status_view(state, time.time()), console=_console(), auto_refresh=False) as live:
        while is_active(state, time.time()):
            time.sleep(ns.watch)
            state = _read(ns, job_id)
            live.update(status_view(state, time.time()), refresh=True)
    return state


def cmd_list(ns: argparse.Namespace) -> int:
    from coordinator.report.status_view import list_jobs, list_table, scrub

    store = store_uri(ns)
    jobs = scrub(list_jobs(store, storage_options(ns)), _secrets())
    if ns.json:
        print(json.dumps(jobs, indent=1))
        return 0
    if not jobs:
        print(f"no jobs in {scrub(store, _secrets())}")
        return 0
    _console().print(list_table(jobs, time.time()))
    return 0


def cmd_cancel(ns: argparse.Namespace) -> int:
    from common.errors import UsageError
    from coordinator.report.state import read_state, request_cancel
    from coordinator.report.status_view import job_exists, span, stale_for

    job_id = _job_id(ns.job)
    store, options = store_uri(ns), storage_options(ns)
    if not job_exists(store, job_id, options):
        shown = scrub_text(store)
        raise UsageError(f"no job {job_id} in store {shown}", "check the job id, --store or $BATCHFLEET_STORE")
    state: dict[str, Any] = {}
    try:
        state = read_state(store, job_id, options)
    except UsageError:
        pass  # submitted, no state written yet: the coordinator still polls for the marker
    if state.get("state") not in (None, "running"):
        print(f"job {job_id} already {state['state']}; nothing to cancel")
        return 0
    request_cancel(store, job_id, options)
    silent = stale_for(state, time.time())
    note = f" (but its coordinator was last seen {span(silent)} ago; it may not be running)" if silent else ""
    print(f"cancel requested for job {job_id}; its coordinator stops it within a few seconds{note}")
    return 0


def scrub_text(text: str) -> str:
    from common.redact import redact

    return redact(text, _secrets())
