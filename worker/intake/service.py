"""The long-running worker: serve every announced job until a signal says stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType

from common.broker.base import Broker
from worker.intake.node import NodeConfig, WorkerNode
from worker.intake.sdnotify import notify
from worker.run.standby import Standby

log = logging.getLogger(__name__)

STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])


@dataclass
class StopState:
    """First signal: drain. Second: stop at once."""

    requested: threading.Event
    count: int = 0


def install_signal_handlers(state: StopState, node: WorkerNode) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        state.count += 1
        if state.count == 1:
            log.warning("signal %d: finishing running batches, taking no more work", signum)
            state.requested.set()
        else:
            log.warning("signal %d again: stopping now; unfinished batches go back to the queue", signum)
            node.kill_now()
            os._exit(130)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def serve_forever(broker: Broker, config: NodeConfig, grace: float, metrics_port: int | None = None) -> int:
    """Run a worker node until SIGTERM/SIGINT (CTRL_BREAK on Windows); exit code 0 when drained."""
    node = WorkerNode(broker, config, Standby(), keep_warm=True)
    if metrics_port:
        node.metrics.serve(metrics_port, config.node_id)
    state = StopState(threading.Event())
    install_signal_handlers(state, node)
    node.start(listen=True)
    notify("READY=1")
    gpus = f"GPUs {','.join(config.gpus)}" if config.gpus else "no GPU"
    log.warning("worker %s ready (pid %d, %s)", config.node_id, os.getpid(), gpus)
    while not state.requested.wait(1.0):
        pass
    notify("STOPPING=1")
    node.stop(grace)
    log.warning("worker %s stopped", config.node_id)
    return 0
