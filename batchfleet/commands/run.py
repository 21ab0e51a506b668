"""`batchfleet run` and `batchfleet validate`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from batchfleet.commands.common import (
    add_connection_flags,
    add_log_flag,
    broker_url,
    open_broker_from,
    storage_options,
    store_uri,
)
from batchfleet.commands.trust import add_trust_flags, known_secrets, signing_key
from common.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from coordinator.spec.args import add_setting_flags

    run = sub.add_parser("run", help="run a component (embedded, or on a fleet with --broker)")
    add_spec_flags(run)
    add_connection_flags(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    run.add_argument("--detach", action="store_true", help="fleet mode: submit, follow in the background")
    run.add_argument("--resume", default=None, metavar="JOB", help="resume JOB instead of starting a new job")
    add_trust_flags(run, "fleet mode: HMAC key to sign the job with (or $BATCHFLEET_SIGNING_KEY_FILE)")
    add_setting_flags(run)
    add_log_flag(run)
    run.set_defaults(handler=cmd_run)
    for name, text in (
        ("resume", "re-run only the unfinished mini-batches of a failed, cancelled or stopped job"),
        ("follow", "follow a running job (again): use after a coordinator was stopped or killed"),
    ):
        attach = sub.add_parser(name, help=text)
        attach.add_argument("job_id", help="the job id printed by `batchfleet run`")
        add_connection_flags(attach)
        attach.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
        add_trust_flags(attach, "fleet mode: the fleet's HMAC key (or $BATCHFLEET_SIGNING_KEY_FILE)")
        add_log_flag(attach)
        attach.set_defaults(handler=cmd_attach, resume=name == "resume")
    validate = sub.add_parser("validate", help="check a spec (and bindings, if given) without running")
    add_spec_flags(validate)
    add_setting_flags(validate)
    add_log_flag(validate)
    validate.set_defaults(handler=cmd_validate)


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="ParallelComponent YAML, Azure ML v2 parallel job or pipeline YAML")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="NAME=PATH[:tabular|:direct]")
    parser.add_argument("--output", "-o", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run setting")
    parser.add_argument(
        "--datastore", action="append", default=[], metavar="NAME=URI",
        help="where Azure ML datastore NAME is here: azureml://datastores/NAME/paths/P reads URI/P",
    )  # fmt: skip
    parser.add_argument(
        "--data-assets", type=Path, default=None, metavar="FOLDER",
        help="a folder of Azure ML data asset YAML files, for azureml:NAME:VERSION inputs",
    )  # fmt: skip
    parser.set_defaults(datastores=None)  # the config file's `datastores` table, when there is one


def data_map(ns: argparse.Namespace):  # type: ignore[no-untyped-def]
    from batchfleet.commands.common import storage_options
    from coordinator.spec.datastores import DataMap, parse_datastores

    datastores = {**(getattr(ns, "datastores", None) or {}), **parse_datastores(getattr(ns, "datastore", None))}
    return DataMap(datastores, getattr(ns, "data_assets", None), storage_options(ns))


def resolve_from(ns: argparse.Namespace):  # type: ignore[no-untyped-def]
    from coordinator.spec.args import collect_overrides
    from coordinator.spec.loader import load_spec, parse_bindings, resolve

    spec = load_spec(ns.spec)
    overrides = collect_overrides(ns, ns.set)
    inputs, outputs = parse_bindings(ns.input, "input"), parse_bindings(ns.output, "output")
    resolved = resolve(spec, inputs, outputs, overrides, data_map(ns))
    return spec, resolved


def _is_pipeline(ns: argparse.Namespace) -> bool:
    # From the spec module, not the pipeline loader: a job's start-up need not load pipeline code.
    from coordinator.spec.validation import is_pipeline

    return is_pipeline(ns.spec)


def cmd_validate(ns: argparse.Namespace) -> int:
    if _is_pipeline(ns):
        from batchfleet.commands.pipeline import cmd_validate_pipeline

        return cmd_validate_pipeline(ns)
    spec, resolved = resolve_from(ns) if (ns.input or ns.output) else (None, None)
    if spec is None:
        from coordinator.spec.loader import load_spec

        spec = load_spec(ns.spec)
    detail = f", {len(resolved.args)} args" if resolved is not None else ""
    print(f"{ns.spec}: ok ({spec.kind}, entry {spec.entry_script}{detail})")
    return 0


def fleet_key(ns: argparse.Namespace, role: str = "a coordinator") -> bytes | None:
    """The signing key; on a fleet (a broker is set) none is refused unless --insecure."""
    return signing_key(ns, os.environ, fleet=broker_url(ns) is not None, role=role)


def run_options(ns: argparse.Namespace, broker, key: bytes | None):  # type: ignore[no-untyped-def]
    from coordinator.runner import RunOptions

    url = broker_url(ns)
    embedded = url is None
    return RunOptions(
        store_uri=store_uri(ns),
        broker=broker,
        embedded=embedded,
        storage_options=storage_options(ns),
        progress=not ns.no_progress,
        signing_key=key,
        insecure=not embedded and key is None,
        secrets=known_secrets(key, url, os.environ),
    )


def cmd_attach(ns: argparse.Namespace) -> int:
    from coordinator.attach import attach

    key = fleet_key(ns)
    broker = open_broker_from(ns)
    try:
        summary = attach(ns.job_id, run_options(ns, broker, key), resume=ns.resume)
    finally:
        broker.close()
    return report(summary)


def cmd_run(ns: argparse.Namespace) -> int:
    head = getattr(ns, "head_start", None)  # started by batchfleet.cli before anything loaded
    if ns.resume or _is_pipeline(ns):
        _stop_standby(head, listings=True)  # this run plans no new job of its own
    elif broker_url(ns) is not None:
        _stop_standby(head)  # no child of this process runs a job's code
    if ns.resume:
        ns.job_id = ns.resume
        return cmd_attach(argparse.Namespace(**{**vars(ns), "resume": True}))
    if _is_pipeline(ns):
        from batchfleet.commands.pipeline import cmd_run_pipeline

        return cmd_run_pipeline(ns)
    if ns.detach and broker_url(ns) is None:
        raise UsageError("--detach needs a fleet", "pass --broker amqp://... (or set BATCHFLEET_BROKER)")
    return _run(ns, head)


def _stop_standby(head, listings: bool = False) -> None:  # type: ignore[no-untyped-def]
    if head is not None and head.standby is not None:
        head.standby.close()
        head.standby = None
    if head is not None and listings:
        head.prelisted.close()


def _run(ns: argparse.Namespace, head) -> int:  # type: ignore[no-untyped-def]
    from coordinator.runner import JobRun, build_job, environment_mode, run_job
    from worker.intake.gpus import detect_gpus, process_count

    spec, resolved = resolve_from(ns)
    if spec.unused:
        from batchfleet.commands.pipeline import note_unused

        note_unused(spec.unused)
    key = fleet_key(ns)
    broker = open_broker_from(ns)
    options = run_options(ns, broker, key)
    if head is not None:
        options.prelisted = head.prelisted
        if head.standby is not None and environment_mode(resolved.settings, embedded=True) == "current":
            processes = process_count(None, resolved.settings, detect_gpus())  # as the embedded node counts
            options.standby = head.standby.trim(processes).top_up(processes)
        else:
            _stop_standby(head)  # the job's children start with its environment's interpreter
    try:
        if ns.detach:
            job = build_job(spec, resolved, options)
            JobRun(job, options).submit()
            log_path = spawn_follower(job.job_id, ns)
            print(f"{job.job_id}")
            print(
                f"submitted; following in the background (log: {log_path}); see `batchfleet status {job.job_id}`",
                file=sys.stderr,
            )
            return 0
        summary = run_job(spec, resolved, options)
    finally:
        broker.close()
    return report(summary)


def spawn_follower(job_id: str, ns: argparse.Namespace) -> Path:
    """A detached `batchfleet follow JOB`; the broker URL travels in the environment, not argv."""
    log_path = Path(tempfile.gettempdir()) / f"batchfleet-{job_id}.log"
    from batchfleet.config import child_environment

    # The URL as given (a password file stays a file), and the trust settings this process used.
    env = {**os.environ, "BATCHFLEET_BROKER": ns.broker or os.environ.get("BATCHFLEET_BROKER", ""),
           "BATCHFLEET_STORE": store_uri(ns)}  # fmt: skip
    resolved = getattr(ns, "resolved_config", None)
    if resolved is not None:
        env |= child_environment(resolved)  # the same batchfleet.toml and profile
    for name, variable in (("s3_endpoint_url", "BATCHFLEET_S3_ENDPOINT_URL"), ("broker_ca", "BATCHFLEET_BROKER_CA"),
                           ("broker_cert", "BATCHFLEET_BROKER_CERT"), ("broker_key", "BATCHFLEET_BROKER_KEY"),
                           ("signing_key_file", "BATCHFLEET_SIGNING_KEY_FILE")):  # fmt: skip
        if getattr(ns, name, None):
            env[variable] = str(getattr(ns, name))
    if getattr(ns, "signing_key_file", None):
        env.pop("BATCHFLEET_SIGNING_KEY", None)  # the file chosen here wins, as it did in this process
    if getattr(ns, "insecure", None):
        env["BATCHFLEET_INSECURE"] = "1"
    flags: dict[str, object] = {"start_new_session": True}
    if os.name == "nt":
        flags = {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    with open(log_path, "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "batchfleet", "follow", job_id, "--no-progress"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **flags,  # type: ignore[call-overload]
        )
    return log_path


def report(summary) -> int:  # type: ignore[no-untyped-def]
    """The job's one closing line; a job that did not succeed is an error naming its log."""
    from common.errors import JobFailed
    from coordinator.report.joblogs import final_line

    print(final_line(summary))
    if summary.state != "succeeded":
        where = summary.job_result_uri or "logs/job_result.txt in the output location"
        raise JobFailed(f"job {summary.job_id} {summary.state}: {summary.reason}", f"see {where}")
    return 0
