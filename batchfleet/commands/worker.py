"""`batchfleet worker`: a long-running generic worker node."""

from __future__ import annotations

import argparse
import os
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
from batchfleet.commands.trust import add_trust_flags, known_secrets, signing_key, store_roots
from common.errors import BatchfleetError, UsageError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    worker = sub.add_parser("worker", help="serve jobs from a broker until stopped (SIGTERM drains)")
    add_connection_flags(worker)
    worker.add_argument("--processes", type=int, default=None, help="child processes per job (default: job's)")
    worker.add_argument(
        "--node-id",
        default=None,
        metavar="ID",
        help="this node's name, unique in the fleet; {host}, {machine} (8 hex digits of the machine id) and {pid} "
        "are filled in (default $BATCHFLEET_NODE_ID, else {host}-{machine}-{pid})",
    )
    worker.add_argument("--work-dir", type=Path, default=None, help="local scratch (default: system temp)")
    worker.add_argument("--grace", type=float, default=None, help="seconds to finish running batches on stop (30)")
    add_trust_flags(worker, "HMAC key of the fleet; refuse what it did not sign (or $BATCHFLEET_SIGNING_KEY_FILE)")
    worker.add_argument(
        "--store-allow",
        action="append",
        nargs="+",
        default=None,
        metavar="URI",
        help="store roots to take job files and code from (default: --store, $BATCHFLEET_STORE or ./.batchfleet)",
    )
    worker.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    worker.add_argument(
        "--gpus", default=None, metavar="LIST",
        help="GPUs for this node: auto (CUDA_VISIBLE_DEVICES, else nvidia-smi -L), none, or 0,1 "
        "(default $BATCHFLEET_GPUS or auto); one child per GPU when a job sets no process_count_per_node",
    )  # fmt: skip
    worker.add_argument(
        "--environment",
        choices=("job", "current"),
        default=None,
        help="job: build each job's Python environment (default); current: run every job in this Python "
        "(default $BATCHFLEET_ENVIRONMENT or job)",
    )
    worker.add_argument(
        "--keep-work", action="store_true", default=None, help="keep each job's work folder (for debugging)"
    )
    worker.add_argument(
        "--check", action="store_true", help="exit 0 if broker (and store) are reachable, else 1; shows free disk"
    )
    add_log_flag(worker)
    worker.set_defaults(handler=cmd_worker)


def cmd_worker(ns: argparse.Namespace) -> int:
    from worker.intake.gpus import parse_gpus
    from worker.intake.identity import node_id_from
    from worker.intake.node import NodeConfig
    from worker.intake.service import serve_forever

    if ns.processes is not None and ns.processes < 1:
        raise UsageError(f"--processes must be at least 1, got {ns.processes}")
    if ns.check:
        return check(ns)
    if not broker_url(ns):
        raise UsageError("a worker needs a broker", "pass --broker amqp://... or set BATCHFLEET_BROKER")
    gpus = parse_gpus(ns.gpus or os.environ.get("BATCHFLEET_GPUS") or "auto")  # bad flags first, then trust
    roots = store_roots(ns.store_allow, store_uri(ns))
    key = signing_key(ns, os.environ, fleet=True, role="a worker")
    node_id = node_id_from(ns.node_id or os.environ.get("BATCHFLEET_NODE_ID"))
    work = work_dir(ns, node_id)
    config = NodeConfig(
        node_id=node_id,
        work_root=work,
        processes=ns.processes,
        storage_options=storage_options(ns),
        gpus=gpus,
        signing_key=key,
        store_roots=roots,
        secrets=known_secrets(key, broker_url(ns), os.environ),
        environment=ns.environment or os.environ.get("BATCHFLEET_ENVIRONMENT") or "job",
        keep_work=bool(ns.keep_work),
    )
    broker = open_broker_from(ns)
    try:
        return serve_forever(broker, config, ns.grace, ns.metrics_port)
    finally:
        broker.close()


def check(ns: argparse.Namespace) -> int:
    """Health check for service managers and load balancers."""
    from common.broker.factory import redact_url
    from common.storage import open_storage

    url = broker_url(ns)
    store = ns.store or os.environ.get("BATCHFLEET_STORE")
    try:
        if not url:
            raise UsageError("no broker to check", "pass --broker or set BATCHFLEET_BROKER")
        open_broker_from(ns).close()
        # Read-only: a health check must not create the store (or anything in it).
        standing = open_storage(store, storage_options(ns)).check_reachable(store) if store else ""
    except BatchfleetError as exc:
        print(f"batchfleet: unhealthy: {exc.line()}")
        return 1
    where = f"; store {store} {standing}" if store else ""
    print(f"ok: broker {redact_url(url)} reachable{where}; {free_disk(work_dir(ns))}")
    return 0


def work_dir(ns: argparse.Namespace, node_id: str | None = None) -> Path:
    """--work-dir, else batchfleet-<node> in the system temp folder (its parent, before a node id exists)."""
    if ns.work_dir is not None:
        return Path(ns.work_dir)
    temp = Path(tempfile.gettempdir())
    return temp / f"batchfleet-{node_id}" if node_id else temp


def free_disk(folder: Path) -> str:
    """One line: free space where the worker keeps its work (the nearest folder that exists)."""
    import shutil

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return (
        f"disk: {usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB "
        f"({100 * usage.free / max(usage.total, 1):.0f}%) at {folder}"
    )
