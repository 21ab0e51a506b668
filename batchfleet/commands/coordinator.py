"""`batchfleet coordinator` (the service) and `batchfleet submit` (hand it a job)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from batchfleet.commands.common import add_connection_flags, add_log_flag, broker_url, open_broker_from
from batchfleet.commands.run import add_spec_flags, fleet_key, resolve_from, run_options
from batchfleet.commands.trust import add_trust_flags
from common.errors import UsageError
from common.jobarea import JobArea


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from coordinator.spec.args import add_setting_flags

    service = sub.add_parser("coordinator", help="run submitted jobs as a service (several at once)")
    add_connection_flags(service)
    service.add_argument("--max-jobs", type=int, default=None, help="jobs followed at once (4)")
    add_trust_flags(service, "the fleet's HMAC key: sign jobs, check what comes back (or $BATCHFLEET_SIGNING_KEY_FILE)")
    add_log_flag(service)
    service.set_defaults(handler=cmd_coordinator, no_progress=True)
    submit = sub.add_parser("submit", help="submit a job to a running `batchfleet coordinator`")
    add_spec_flags(submit)
    add_connection_flags(submit)
    add_trust_flags(submit, "HMAC key to sign the job with (or $BATCHFLEET_SIGNING_KEY_FILE)")
    wait = submit.add_mutually_exclusive_group()
    wait.add_argument("--submit-wait", type=float, default=None, metavar="SECONDS",
                      help="seconds to wait for the coordinator's answer (default 10)")  # fmt: skip
    wait.add_argument("--no-wait", action="store_true", help="hand the job over without waiting for an answer")
    add_setting_flags(submit)
    add_log_flag(submit)
    submit.set_defaults(handler=cmd_submit, no_progress=True)


def _need_fleet(ns: argparse.Namespace) -> None:
    if broker_url(ns) is None:
        raise UsageError("the coordinator service needs a broker", "pass --broker amqp://... or set BATCHFLEET_BROKER")


def cmd_submit(ns: argparse.Namespace) -> int:
    """Store the job and hand it to the coordinator service; wait for its answer unless --no-wait."""
    from coordinator.plan.submit import write_job
    from coordinator.runner import build_job, check_output
    from coordinator.service import declare_submissions

    _need_fleet(ns)
    if ns.submit_wait is not None and ns.submit_wait <= 0:
        raise UsageError(
            f"--submit-wait {ns.submit_wait:g}: must be more than 0 seconds", "for example --submit-wait 10"
        )
    spec, resolved = resolve_from(ns)
    key = fleet_key(ns, "a submitted job")
    broker = open_broker_from(ns)
    try:
        options = run_options(ns, broker, key)
        job = build_job(spec, resolved, options)
        check_output(job, options.storage_options)
        write_job(job, options.storage_options)
        declare_submissions(broker)
        if ns.no_wait:
            _hand_over(broker, job.job_id, JobArea(job.store_uri).job_file, None, key)
        else:
            _submit_and_wait(broker, job, options, ns.submit_wait or 10.0, key)
    finally:
        broker.close()
    print(job.job_id)
    return 0


def _hand_over(broker, job_id: str, job_uri: str, reply_to: str | None, key: bytes | None) -> None:  # type: ignore[no-untyped-def]
    from common.messages import JobSubmission
    from common.signing import sign_announcement
    from coordinator.service import submissions_queue

    sig = sign_announcement(key, job_id, job_uri, "active", submission=True) if key is not None else None
    request = JobSubmission(job_id=job_id, job_uri=job_uri, state="active", reply_to=reply_to, sig=sig)
    broker.publish(submissions_queue(), [request.model_dump_json().encode()])


def _submit_and_wait(broker, job, options, timeout: float, key: bytes | None) -> None:  # type: ignore[no-untyped-def]
    """Submit with a reply queue; a refusal or no answer in `timeout` seconds is an error (exit 1)."""
    import queue as queues

    from common.errors import BatchfleetError, JobFailed
    from common.storage import open_storage
    from coordinator.plan.snapshot import forget_snapshot
    from coordinator.service import await_reply

    reply_to = broker.declare_reply_queue()
    sink: queues.Queue = queues.Queue()  # type: ignore[type-arg]
    tag = broker.consume(reply_to, 1, sink)
    try:
        _hand_over(broker, job.job_id, JobArea(job.store_uri).job_file, reply_to, key)
        answer = await_reply(sink, broker, job.job_id, timeout, key)
    finally:
        broker.cancel(tag)
    if answer is None:
        print(job.job_id)  # it stays queued: a coordinator started later runs it
        raise BatchfleetError(
            f"no coordinator answered within {timeout:g}s; job {job.job_id} stays queued and runs when one takes it",
            f"is `batchfleet coordinator` running on this broker? (`batchfleet cancel {job.job_id}` withdraws it)",
        )
    if not answer.accepted:
        open_storage(job.store_uri, options.storage_options).delete(job.store_uri)  # nothing will run it: leave nothing
        if options.fresh_snapshot:  # and the code snapshot it stored, which no other job uses
            forget_snapshot(options.store_uri, options.fresh_snapshot, options.storage_options)
        raise JobFailed(f"coordinator {answer.coordinator} refused job {job.job_id}: {answer.reason}")
    print(f"job {job.job_id} accepted by coordinator {answer.coordinator}: {answer.reason}", file=sys.stderr)


def cmd_coordinator(ns: argparse.Namespace) -> int:
    from coordinator.attach import run_stored
    from coordinator.service import CoordinatorService, ServiceConfig
    from worker.intake.sdnotify import notify

    _need_fleet(ns)
    if ns.max_jobs < 1:
        raise UsageError(f"--max-jobs must be at least 1, got {ns.max_jobs}")
    key = fleet_key(ns)
    broker = open_broker_from(ns)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service = CoordinatorService(ServiceConfig(run_options(ns, broker, key), ns.max_jobs), run_stored)
    notify("READY=1")
    print(f"coordinator ready (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        service.serve(stop)
    finally:
        notify("STOPPING=1")
        broker.close()
    return 0
