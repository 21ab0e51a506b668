"""`batchfleet debug`: run one mini-batch's init() and run() in this process, under pdb if you like."""

from __future__ import annotations

import argparse

from batchfleet.commands.common import add_log_flag, storage_options
from batchfleet.commands.run import add_spec_flags, resolve_from


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from coordinator.spec.args import add_setting_flags

    debug = sub.add_parser(
        "debug",
        help="run one mini-batch through init() and run() in this process (breakpoint() and pdb work)",
        description="Plans the job, takes one mini-batch and calls the entry script's init() and run() "
        "in this process: no broker, no child process, nothing written to the store or the output. "
        "Outputs not given with --output are bound to a temp folder.",
    )
    add_spec_flags(debug)
    which = debug.add_mutually_exclusive_group()
    which.add_argument("--batch", type=int, default=0, metavar="N", help="mini-batch number (default 0)")
    which.add_argument("--items", nargs="+", default=None, metavar="PATH",
                       help="one mini-batch of these files (for the first mini-batched input)")  # fmt: skip
    debug.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (MinIO); default from AWS settings")
    debug.add_argument("--s3-region", default=None, help="S3 region; default from AWS settings")
    debug.add_argument("--s3-path-style", action="store_true", default=None, help="path-style S3 addressing")
    debug.add_argument("--s3-ca-bundle", default=None, help="CA bundle for an https S3 endpoint")
    add_setting_flags(debug)
    add_log_flag(debug)
    debug.set_defaults(handler=cmd_debug)


def cmd_debug(ns: argparse.Namespace) -> int:
    import shutil

    from batchfleet.debug import DebugRequest, Folders, run_debug, unbound_outputs
    from coordinator.spec.loader import load_spec

    folders = Folders.make()
    try:
        bound = unbound_outputs(load_spec(ns.spec), ns.output, folders)
        for text in bound:
            print(f"output {text.replace('=', ' bound to ', 1)} (temp; pass --output NAME=PATH to choose)")
        ns.output = [*ns.output, *bound]
        spec, resolved = resolve_from(ns)
    except BaseException:
        shutil.rmtree(folders.root, ignore_errors=True)
        raise
    request = DebugRequest(batch=ns.batch, items=ns.items, storage_options=storage_options(ns), folders=folders)
    return run_debug(spec, resolved, request)
