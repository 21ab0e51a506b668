"""Prometheus metrics of a worker node, scraped over HTTP."""

from __future__ import annotations

import socket
import urllib.request

from common.messages import BatchResult
from worker.report.metrics import NodeMetrics


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_are_served() -> None:
    metrics = NodeMetrics()
    assert not metrics.enabled
    port = free_port()
    metrics.serve(port, "node-x")
    for outcome in ("committed", "committed", "retry"):
        metrics.observe(
            BatchResult(
                job_id="j1", batch_id=0, node_id="node-x", attempt=1, outcome=outcome, seconds=0.5, download_seconds=0.1
            )
        )
    metrics.depth("j1", 7)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'batchfleet_batches_done_total{job="j1"} 2.0' in text
    assert 'batchfleet_batches_failed_total{job="j1"} 1.0' in text
    assert 'batchfleet_queue_depth{job="j1"} 7.0' in text
    assert 'batchfleet_batch_seconds_count{job="j1"} 3.0' in text
    assert 'node_id="node-x"' in text


def test_series_of_ended_jobs_go_after_a_grace_period() -> None:
    now = [1000.0]
    metrics = NodeMetrics(ended_grace=60, clock=lambda: now[0])
    port = free_port()
    metrics.serve(port, "node-y")
    for job in ("old", "live"):
        metrics.observe(BatchResult(job_id=job, batch_id=0, node_id="node-y", attempt=1, outcome="committed"))
        metrics.depth(job, 3)
    metrics.job_ended("old")

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    now[0] += 59
    assert metrics.prune() == [] and 'job="old"' in scrape()  # scrapers still see the final values
    now[0] += 2
    assert metrics.prune() == ["old"]
    text = scrape()
    assert 'job="old"' not in text
    assert 'batchfleet_batches_done_total{job="live"} 1.0' in text and 'batchfleet_queue_depth{job="live"} 3.0' in text
    assert metrics.prune() == []


def test_a_job_served_again_keeps_its_series() -> None:
    now = [0.0]
    metrics = NodeMetrics(ended_grace=10, clock=lambda: now[0])
    metrics.serve(free_port(), "node-z")
    metrics.depth("j", 1)
    metrics.job_ended("j")
    metrics.job_started("j")
    now[0] += 100
    assert metrics.prune() == []
