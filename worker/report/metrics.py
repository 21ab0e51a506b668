"""Optional Prometheus metrics for a worker node (`batchfleet worker --metrics-port N`)."""

from __future__ import annotations

import logging
from typing import Any

from common.errors import UsageError
from common.messages import BatchResult

log = logging.getLogger(__name__)


class NodeMetrics:
    """Counters and histograms per job; a no-op until `serve()` is called."""

    def __init__(self) -> None:
        self._on = False
        self._m: dict[str, Any] = {}

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
