"""Optional Prometheus metrics for a worker node (`batchfleet worker --metrics-port N`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from common.errors import UsageError
from common.messages import BatchResult

log = logging.getLogger(__name__)

ENDED_GRACE = 600.0  # seconds an ended job's series stay, so scrapers see its final values


class NodeMetrics:
    """Counters and histograms per job; a no-op until `serve()` is called."""

    def __init__(self, ended_grace: float = ENDED_GRACE, clock: Callable[[], float] = time.monotonic) -> None:
        self._on = False
        self._m: dict[str, Any] = {}
        self._grace = ended_grace
        self._clock = clock
        self._ended: dict[str, float] = {}  # job -> when it ended here
        self._lock = threading.Lock()

    def serve(self, port: int, node_id: str) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise UsageError("--metrics-port needs prometheus-client", "pip install 'batchfleet[metrics]'") from exc
        registry = prom.CollectorRegistry()
        labels = ["job"]
        self._m = {
            "done": prom.Counter("batchfleet_batches_done", "Mini-batches committed", labels, registry=registry),
            "failed": prom.Counter("batchfleet_batches_failed", "Failed tries", labels, registry=registry),
            "seconds": prom.Histogram("batchfleet_batch_seconds", "Seconds per try", labels, registry=registry),
            "download": prom.Histogram(
                "batchfleet_download_seconds", "Seconds downloading a batch", labels, registry=registry
            ),
            "depth": prom.Gauge(
                "batchfleet_queue_depth",
                "Messages waiting (a pack of mini-batches counts once)",
                labels,
                registry=registry,
            ),
        }
        prom.Info("batchfleet_node", "This worker node", registry=registry).info({"node_id": node_id})
        prom.start_http_server(port, registry=registry)
        self._on = True
        log.warning("metrics on :%d/metrics", port)

    @property
    def enabled(self) -> bool:
        return self._on

    def observe(self, result: BatchResult) -> None:
        if not self._on:
            return
        job = result.job_id
        (self._m["done"] if result.outcome == "committed" else self._m["failed"]).labels(job).inc()
        self._m["seconds"].labels(job).observe(result.seconds)
        self._m["download"].labels(job).observe(result.download_seconds)

    def depth(self, job_id: str, depth: int) -> None:
        if self._on:
            self._m["depth"].labels(job_id).set(depth)

    def job_ended(self, job_id: str) -> None:
        """The node stopped serving a job: its series go after the grace period (see prune)."""
        if self._on:
            with self._lock:
                self._ended[job_id] = self._clock()

    def job_started(self, job_id: str) -> None:
        """Served again (a job is announced anew after a restart): keep its series."""
        with self._lock:
            self._ended.pop(job_id, None)

    def prune(self) -> list[str]:
        """Drop every series of jobs that ended more than the grace period ago; returns those jobs.
        Without this a long-running worker exports series for every job it ever served."""
        now = self._clock()
        with self._lock:
            due = [job for job, at in self._ended.items() if now - at >= self._grace]
            for job in due:
                del self._ended[job]
        for job in due:
            for metric in self._m.values():
                try:
                    metric.remove(job)
                except KeyError:
                    pass  # this job never had a value in that series
        return due
