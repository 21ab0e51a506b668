"""The `batchfleet` command: parsing, logging, and one line per error."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence

from batchfleet.headstart import start as start_head
from common.errors import BatchfleetError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one UsageError line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    from batchfleet.commands import register_all

    parser = _Parser(
        prog="batchfleet",
        description="Run Azure ML style parallel components on your own fleet.",
        epilog="Each setting comes from its flag, else its environment variable, else batchfleet.toml "
        "(--config, --profile); `batchfleet config show` says which.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    register_all(sub)
    return parser


def _setup_logging(level: str | None) -> None:
    from common.redact import RedactingFilter, secret_values_from_env

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secret_values_from_env(os.environ)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    chosen = (level or os.environ.get("BATCHFLEET_LOG_LEVEL") or "WARNING").upper()
    root.setLevel(chosen)
    # pika logs every failed connection attempt at ERROR; we report those ourselves in one line.
    logging.getLogger("pika").setLevel(logging.DEBUG if chosen == "DEBUG" else logging.CRITICAL)


def _tune_gc() -> None:
    """Modules and models loaded so far live as long as the process: the collector skips them,
    and runs less often, since a job allocates many short-lived objects and few cycles."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    head = start_head(args, os.environ)  # before the imports below: see batchfleet/headstart.py
    try:
        ns = build_parser().parse_args(args)
        ns.head_start = head
        from batchfleet.config import apply

        apply(ns, os.environ)  # batchfleet.toml: flags > environment > profile > defaults
        _tune_gc()
        _setup_logging(getattr(ns, "log_level", None))
        return int(ns.handler(ns))
    except BatchfleetError as exc:
        print(f"batchfleet: error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("batchfleet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("BATCHFLEET_DEBUG"):
            raise
        print(
            f"batchfleet: internal error: {type(exc).__name__}: {exc} (set BATCHFLEET_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 70
    finally:
        if head is not None:
            head.close()


def entry() -> None:
    """The console script: run, flush, and leave without the interpreter's teardown.

    Every resource of ours is closed when main() returns. What is left are pyarrow's thread
    pools, and destroying them at exit aborted about one tabular run in twenty after the job
    had succeeded ("terminate called without an active exception").
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
