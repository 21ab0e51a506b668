"""A node's report of one try, built from the outcome a child (or the node) recorded."""

from __future__ import annotations

from typing import Any

import pytest

from worker.report.results import try_result
from worker.run.pool import Task

SECRET = "hunter2-secret-value"


def task(**payload: Any) -> Task:
    return Task(7, 2, {"total": 10, **payload}, None, download_seconds=0.25, received=1000.0)


@pytest.mark.parametrize(
    ("outcome", "payload", "expected"),
    [
        # committed: what run() returned counts; the part names the frame
        ({"status": "committed", "total": 10, "succeeded": 10, "failed": 0, "part": "p#0+9", "started": 1001.0},
         {}, {"succeeded": 10, "failed": 0, "part": "p#0+9", "error": None, "started": 1001.0}),
        # a short return: the rest failed, and a missing file's error says why
        ({"status": "committed", "total": 10, "succeeded": 8, "failed": 2}, {"missing_error": "gone: a.txt"},
         {"succeeded": 8, "failed": 2, "error": "gone: a.txt", "started": 1000.0}),
        # a committed try with nothing failed never carries the missing error
        ({"status": "committed", "total": 10, "succeeded": 10, "failed": 0}, {"missing_error": "gone: a.txt"},
         {"failed": 0, "error": None}),
        # an error: every item failed, whatever the outcome claimed succeeded
        ({"status": "error", "error": f"ValueError: {SECRET}", "succeeded": 5, "error_type": "ValueError",
          "traceback": f"Traceback ... {SECRET}"},
         {}, {"succeeded": 0, "failed": 10, "error": "ValueError: ***", "error_type": "ValueError"}),
    ],
)  # fmt: skip
def test_try_result(outcome: dict[str, Any], payload: dict[str, Any], expected: dict[str, Any]) -> None:
    result = try_result("j", "node-a", task(**payload), outcome, "process001", "committed", [SECRET])
    assert (result.job_id, result.batch_id, result.attempt, result.node_id) == ("j", 7, 2, "node-a")
    assert result.total == 10 and result.download_seconds == 0.25
    assert result.seconds >= 0.25
    for key, value in expected.items():
        assert getattr(result, key) == value, key
    assert SECRET not in result.model_dump_json()
