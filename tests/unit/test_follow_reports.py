"""Reports travel bundled from a node's reporter to the coordinator's follower."""

from __future__ import annotations

import logging

import pytest

from common.messages import BatchResult, JobEvent, bundle_reports, encode_report, unbundle_reports
from coordinator.follow import decode_reports


def result(batch_id: int, error: str | None = None) -> BatchResult:
    return BatchResult(job_id="j", batch_id=batch_id, node_id="n", attempt=1, outcome="committed", total=1,
                       succeeded=1, error=error)  # fmt: skip


def test_a_group_of_reports_becomes_one_message_and_comes_back_in_order() -> None:
    bodies = [encode_report(result(i, error="multi\nline" if i == 1 else None)) for i in range(3)]
    messages = bundle_reports(bodies)
    assert len(messages) == 1
    assert unbundle_reports(messages[0]) == bodies
    assert [r.batch_id for r in decode_reports(messages[0], "q")] == [0, 1, 2]  # type: ignore[union-attr]


def test_a_lone_report_is_sent_as_it_is() -> None:
    body = encode_report(JobEvent(job_id="j", node_id="n", kind="heartbeat"))
    assert bundle_reports([body]) == [body]
    assert unbundle_reports(body) == [body]


def test_bundles_stay_under_the_size_limit() -> None:
    bodies = [encode_report(result(i)) for i in range(10)]
    messages = bundle_reports(bodies, limit=3 * len(bodies[0]))
    assert len(messages) > 1
    assert [part for message in messages for part in unbundle_reports(message)] == bodies


def test_an_unreadable_report_in_a_bundle_skips_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    messages = bundle_reports([encode_report(result(0)), b"Rnot json", encode_report(result(2))])
    with caplog.at_level(logging.WARNING):
        reports = decode_reports(messages[0], "bf.j.reports")
    assert [r.batch_id for r in reports] == [0, 2]  # type: ignore[union-attr]
    assert "unreadable report on bf.j.reports" in caplog.text
