"""Retry and threshold decisions, table-style, no broker."""

from __future__ import annotations

import pytest

from common.policy import (
    PACKED_WAIT,
    Counts,
    extra_fate,
    init_gives_up,
    is_stalled,
    keeps_packed,
    messages_window,
    pipeline_depth,
    prefetch_for,
    settle_for,
    threshold_breach,
)
from common.settings import RunSettings


@pytest.mark.parametrize(
    ("result", "attempt", "max_try", "expected"),
    [
        ("committed", 1, 3, ("ack", "committed")),
        ("committed", 3, 3, ("ack", "committed")),
        ("error", 1, 3, ("requeue", "retry")),
        ("error", 2, 3, ("requeue", "retry")),
        ("error", 3, 3, ("ack", "failed")),
        ("error", 4, 3, ("ack", "failed")),
        ("error", 1, 1, ("ack", "failed")),
    ],
)
def test_settle_for(result, attempt, max_try, expected) -> None:
    assert settle_for(result, attempt, max_try) == expected


@pytest.mark.parametrize(
    ("settings", "counts", "breached"),
    [
        ({}, Counts(10, 10, 100), None),
        ({"error_threshold": 5}, Counts(10, 0, 5), None),
        ({"error_threshold": 5}, Counts(10, 1, 6), "6 failed items exceed error_threshold=5"),
        ({"error_threshold": 0}, Counts(10, 0, 1), "1 failed items exceed error_threshold=0"),
        ({"allowed_failed_count": 2}, Counts(10, 2, 20), None),
        (
            {"allowed_failed_count": 2},
            Counts(10, 3, 30),
            "3 failed mini-batches exceed allowed_failed_count=2",
        ),
        ({"allowed_failed_percent": 20}, Counts(10, 2, 0), None),
        ({"allowed_failed_percent": 20}, Counts(10, 3, 0), "allowed_failed_percent=20"),
        ({"allowed_failed_percent": 0}, Counts(10, 1, 0), "allowed_failed_percent=0"),
        ({"allowed_failed_percent": 100}, Counts(10, 10, 0), None),
        ({"error_threshold": -1, "allowed_failed_count": -1}, Counts(5, 5, 50), None),
        ({"allowed_failed_count": 1}, Counts(10, 1, 1, batches_short=1), None),
        (
            {"allowed_failed_count": 1},
            Counts(10, 2, 2, batches_short=1),
            "2 failed mini-batches (1 of them short returns) exceed allowed_failed_count=1",
        ),
        ({"allowed_failed_percent": 10}, Counts(10, 2, 2, batches_short=2), "failed (2 of them short returns) (20.0%)"),
    ],
)
def test_threshold_breach(settings, counts, breached) -> None:
    reason = threshold_breach(counts, RunSettings(**settings))
    if breached is None:
        assert reason is None
    else:
        assert reason is not None and breached in reason


@pytest.mark.parametrize(
    ("now", "last", "busy", "timeout", "stalled"),
    [
        (100, 0, False, 50, True),
        (100, 0, True, 50, False),
        (100, 60, False, 50, False),
        (100, 50, False, 50, False),
    ],
)
def test_is_stalled(now, last, busy, timeout, stalled) -> None:
    assert is_stalled(now, last, busy, timeout) is stalled


@pytest.mark.parametrize(
    ("failures", "max_try", "gives_up"), [(0, 3, False), (2, 3, False), (3, 3, True), (1, 1, True)]
)
def test_init_gives_up(failures, max_try, gives_up) -> None:
    assert init_gives_up(failures, max_try) is gives_up


def test_stall_timeout_default_follows_azure_rule() -> None:
    assert RunSettings(run_invocation_timeout=10, task_overhead_timeout=5).stall_timeout() == 45
    assert RunSettings(progress_update_timeout=7).stall_timeout() == 7


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({}, "parallel_run_step.txt"),
        ({"append_row_format": "parquet"}, "parallel_run_step.parquet"),
        ({"append_row_format": "csv"}, "parallel_run_step.csv"),
        ({"append_row_format": "csv", "append_row_file_name": "scores.csv"}, "scores.csv"),
    ],
)
def test_merged_file_name_follows_format(settings, name) -> None:
    assert RunSettings(**settings).merged_file_name() == name


@pytest.mark.parametrize(
    ("processes", "seconds", "prefetch"),
    [
        (2, None, 6),
        (2, 0.0001, 512),
        (2, 0.004, 504),
        (2, 0.02, 104),
        (2, 0.1, 24),
        (2, 0.5, 8),
        (2, 1.0, 6),
        (2, 600.0, 6),
        (4, 0.25, 24),
    ],
)
def test_prefetch_follows_batch_pace(processes, seconds, prefetch) -> None:
    assert prefetch_for(processes, seconds) == prefetch


@pytest.mark.parametrize(
    ("seconds", "depth"),
    [
        (None, 2),
        (10.0, 2),
        (0.05, 2),
        (0.049, 4),
        (0.005, 4),
        (0.0049, 5),
        (0.001, 20),
        (0.0002, 100),
        (0.0001, 128),
        (0.0, 128),
    ],
)
def test_pipeline_depth_follows_batch_pace(seconds, depth) -> None:
    assert pipeline_depth(seconds) == depth


@pytest.mark.parametrize(
    ("held", "window", "seconds", "keeps"),
    [
        (0, 6, None, True),  # pace unknown: up to the window
        (5, 6, None, True),
        (6, 6, None, False),
        (6, 6, 2.0, False),  # slow batches: never more than the window
        (5, 6, 2.0, True),
        (6, 6, 0.049, True),  # fast ones: a pack's extra members are milliseconds of work
        (500, 128, 0.001, True),
        (128, 128, 0.05, False),
    ],
)
def test_keeps_packed(held: int, window: int, seconds: float | None, keeps: bool) -> None:
    assert keeps_packed(held, window, seconds) is keeps


@pytest.mark.parametrize(
    ("seconds", "waited", "fate"),
    [
        (None, 0.0, "wait"),  # no batch has finished yet: wait for the pace
        (None, PACKED_WAIT / 2, "wait"),
        (None, PACKED_WAIT, "release"),  # no answer in time: other nodes may take it
        (0.001, 0.0, "run"),  # fast: runs in its turn, not behind the whole queue
        (0.001, 5.0, "run"),
        (0.05, 0.0, "release"),  # slow: spread over nodes as a lone message
        (3.0, 0.0, "release"),
    ],
)
def test_extra_fate(seconds: float | None, waited: float, fate: str) -> None:
    assert extra_fate(seconds, waited) == fate


@pytest.mark.parametrize(
    ("window", "per_message", "seconds", "prefetch"),
    [
        (6, 1, None, 6),
        (128, 1, 0.001, 128),
        (6, 8, None, 1),  # pace unknown: enough packs for the window, and no more
        (8, 8, None, 1),
        (9, 8, None, 2),
        (9, 8, 0.01, 3),  # fast: one more in hand while a pack finishes
        (128, 8, 0.001, 17),
        (1, 64, 0.01, 2),
        (8, 8, 0.05, 8),  # slow: packs are handed back but one member, so count messages one for one
        (6, 8, 3.0, 6),
    ],
)
def test_messages_window(window: int, per_message: int, seconds: float | None, prefetch: int) -> None:
    assert messages_window(window, per_message, seconds) == prefetch
