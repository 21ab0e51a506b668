"""`batchfleet coordinator` (the service) and `batchfleet submit` (hand it a job)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from batchfleet.commands.common import add_connection_flags, add_log_flag, broker_url, open_broker_from
from batchfleet.commands.run import add_spec_flags, resolve_from, run_options
from common.errors import UsageError
from common.jobarea import JobArea


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from coordinator.spec.args import add_setting_flags

    service = sub.add_parser("coordinator", help="run submitted jobs as a service (several at once)")
    add_connection_flags(service)
    service.add_argument("--max-jobs", type=int, default=None, help="jobs followed at once (4)")
    service.add_argument("--signing-key-file", type=Path, default=None, help="HMAC key; sign jobs with it")
    add_log_flag(service)
    service.set_defaults(handler=cmd_coordinator, no_progress=True)
    submit = sub.add_parser("submit", help="submit a job to a running `batchfleet coordinator`")
    add_spec_flags(submit)
    add_connection_flags(submit)
    submit.add_argument("--signing-key-file", type=Path, default=None, help="HMAC key to sign the job with")
    add_setting_flags(submit)
    add_log_flag(submit)
    submit.set_defaults(handler=cmd_submit, no_progress=True)


def _need_fleet(ns: argparse.Namespace) -> None:
    if broker_url(ns) is None:
        raise UsageError("the coordinator service needs a broker", "pass --broker amqp://... or set BATCHFLEET_BROKER")


def cmd_submit(ns: argparse.Namespace) -> int:
    from common.messages import JobAnnouncement
    from coordinator.plan.submit import write_job
    from coordinator.runner import build_job, check_output
    from coordinator.service import declare_submissions, submissions_queue

    _need_fleet(ns)
    spec, resolved = resolve_from(ns)
    broker = open_broker_from(ns)
    try:
        options = run_options(ns, broker)
        job = build_job(spec, resolved, options)
        check_output(job, options.storage_options)
        write_job(job, options.storage_options)
        declare_submissions(broker)
        request = JobAnnouncement(job_id=job.job_id, job_uri=JobArea(job.store_uri).job_file, state="active")
        broker.publish(submissions_queue(), [request.model_dump_json().encode()])
    finally:
        broker.close()
    print(job.job_id)
    return 0


def cmd_coordinator(ns: argparse.Namespace) -> int:
    from coordinator.attach import run_stored
    from coordinator.service import CoordinatorService, ServiceConfig
    from worker.intake.sdnotify import notify

    _need_fleet(ns)
    if ns.max_jobs < 1:
        raise UsageError(f"--max-jobs must be at least 1, got {ns.max_jobs}")
    broker = open_broker_from(ns)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service = CoordinatorService(ServiceConfig(run_options(ns, broker), ns.max_jobs), run_stored)
    notify("READY=1")
    print(f"coordinator ready (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        service.serve(stop)
    finally:
        notify("STOPPING=1")
        broker.close()
    return 0
