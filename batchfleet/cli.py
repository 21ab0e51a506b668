"""The `batchfleet` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from common.errors import BatchfleetError, UsageError

log = logging.getLogger("batchfleet")

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one UsageError line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, f"see `{self.prog} --help`")


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=None, help="batchfleet's own log level (default WARNING)")


def _run_flags(parser: argparse.ArgumentParser) -> None:
    from common.args import add_setting_flags

    parser.add_argument("spec", type=Path, help="ParallelComponent YAML or Azure ML v2 parallel job YAML")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="NAME=PATH[:tabular|:direct]")
    parser.add_argument("--output", "-o", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run setting")
    parser.add_argument("--store", default=None, help="job area root (default $BATCHFLEET_STORE or ./.batchfleet)")
    parser.add_argument("--broker", default=None, help="amqp(s):// URL; default $BATCHFLEET_BROKER or embedded")
    parser.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (MinIO); default from AWS settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    add_setting_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batchfleet", description="Run Azure ML style parallel components on your own fleet.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a component (embedded, or on a fleet with --broker)")
    _run_flags(run)
    _common_flags(run)
    validate = sub.add_parser("validate", help="check a spec (and bindings, if given) without running")
    validate.add_argument("spec", type=Path)
    validate.add_argument("--input", "-i", action="append", default=[])
    validate.add_argument("--output", "-o", action="append", default=[])
    validate.add_argument("--set", action="append", default=[])
    _common_flags(validate)
    return parser


def _storage_options(ns: argparse.Namespace):  # type: ignore[no-untyped-def]
    from common.storage import StorageOptions

    return StorageOptions(endpoint_url=getattr(ns, "s3_endpoint_url", None))


def _resolve(ns: argparse.Namespace):  # type: ignore[no-untyped-def]
    from common.args import collect_overrides
    from common.spec import load_spec, parse_bindings, resolve

    spec = load_spec(ns.spec)
    overrides = collect_overrides(ns, ns.set)
    resolved = resolve(spec, parse_bindings(ns.input, "input"), parse_bindings(ns.output, "output"), overrides)
    return spec, resolved


def cmd_validate(ns: argparse.Namespace) -> int:
    from common.spec import load_spec

    if ns.input or ns.output:
        spec, resolved = _resolve(ns)
        print(f"{ns.spec}: ok ({spec.kind}, entry {spec.entry_script}, {len(resolved.args)} args)")
    else:
        spec = load_spec(ns.spec)
        print(f"{ns.spec}: ok ({spec.kind}, entry {spec.entry_script})")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from common.broker.factory import open_broker
    from common.errors import JobFailed
    from coordinator.runner import RunOptions, default_store, run_job

    spec, resolved = _resolve(ns)
    url = ns.broker or os.environ.get("BATCHFLEET_BROKER")
    broker = open_broker(url)
    store = ns.store or default_store()
    options = RunOptions(
        store_uri=store, broker=broker, embedded=url is None, storage_options=_storage_options(ns),
        progress=not ns.no_progress,
    )  # fmt: skip
    try:
        summary = run_job(spec, resolved, options)
    finally:
        broker.close()
    where = f"; output {summary.output} ({summary.rows} rows)" if summary.output else ""
    print(
        f"job {summary.job_id} {summary.state}: {summary.batches_committed}/{summary.batches_total} mini-batches, "
        f"{summary.items_succeeded} items succeeded, {summary.items_failed} failed{where}"
    )
    if summary.state != "succeeded":
        raise JobFailed(f"job {summary.job_id} {summary.state}: {summary.reason}",
                        f"see {resolved.output_uri}/logs/job_result.txt")  # fmt: skip
    return 0


COMMANDS: dict[str, Handler] = {"run": cmd_run, "validate": cmd_validate}


def _setup_logging(level: str | None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("BATCHFLEET_LOG_LEVEL") or "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
        _setup_logging(getattr(ns, "log_level", None))
        return COMMANDS[ns.command](ns)
    except BatchfleetError as exc:
        print(f"batchfleet: error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("batchfleet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("BATCHFLEET_DEBUG"):
            raise
        print(f"batchfleet: internal error: {type(exc).__name__}: {exc} (set BATCHFLEET_DEBUG=1 for the traceback)",
              file=sys.stderr)  # fmt: skip
        return 70
