"""The child's outbox: short batches' outcomes travel together, never out of order or held too long."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from worker.run.outbox import Outbox


@pytest.fixture
def pipe() -> Iterator[tuple[Connection, Connection]]:
    parent, child = multiprocessing.Pipe()
    yield parent, child
    parent.close()
    child.close()


def received(conn: Connection) -> list[tuple[object, ...]]:
    out = []
    while conn.poll(0):
        out.append(conn.recv())
    return out


def test_an_outcome_not_held_goes_at_once(pipe) -> None:
    parent, child = pipe
    Outbox(child).put({"batch_id": 1}, hold=False)
    assert received(parent) == [("done", [{"batch_id": 1}])]


def test_held_outcomes_go_together_with_the_first_one_not_held(pipe) -> None:
    parent, child = pipe
    box = Outbox(child, hold=60)
    box.put({"batch_id": 1}, hold=True)
    box.put({"batch_id": 2}, hold=True)
    assert received(parent) == []
    box.put({"batch_id": 3}, hold=False)
    assert received(parent) == [("done", [{"batch_id": 1}, {"batch_id": 2}, {"batch_id": 3}])]


def test_a_full_group_goes_without_waiting(pipe) -> None:
    parent, child = pipe
    box = Outbox(child, hold=60, most=3)
    for batch in range(7):
        box.put({"batch_id": batch}, hold=True)
    assert [[o["batch_id"] for o in m[1]] for m in received(parent)] == [[0, 1, 2], [3, 4, 5]]
    box.flush()
    assert received(parent) == [("done", [{"batch_id": 6}])]


def test_an_old_group_goes_with_the_next_outcome(pipe) -> None:
    parent, child = pipe
    box = Outbox(child, hold=0.01)
    box.put({"batch_id": 1}, hold=True)
    time.sleep(0.02)
    box.put({"batch_id": 2}, hold=True)
    assert received(parent) == [("done", [{"batch_id": 1}, {"batch_id": 2}])]


def test_other_messages_follow_the_outcomes_before_them(pipe) -> None:
    parent, child = pipe
    box = Outbox(child, hold=60)
    box.put({"batch_id": 1}, hold=True)
    box.send(("ran",))
    assert received(parent) == [("done", [{"batch_id": 1}]), ("ran",)]


def test_close_sends_what_is_held(pipe) -> None:
    parent, child = pipe
    box = Outbox(child, hold=60)
    box.put({"batch_id": 1}, hold=True)
    box.close()
    assert received(parent) == [("done", [{"batch_id": 1}])]


class _QuickChild:
    """Runs every task in no time, as a sub-millisecond batch does."""

    def run_task(self, task: dict[str, object], conn: Outbox) -> dict[str, object]:
        return {"batch_id": task["batch_id"], "run_seconds": 0.0}

    def shutdown(self) -> None:
        pass


def test_the_supervisor_hears_of_the_first_half_before_the_child_runs_out(pipe) -> None:
    from worker.run.child import _serve

    parent, child = pipe
    parent.send(("run", [{"batch_id": i} for i in range(8)]))
    parent.send(("stop",))
    _serve(_QuickChild(), child, Outbox(child, hold=60), None)  # type: ignore[arg-type]
    groups = [[o["batch_id"] for o in m[1]] for m in received(parent)]
    # Held only while more tasks are at hand than outcomes wait: the pipe is topped up in time.
    assert groups[0] == [0, 1, 2, 3]
    assert [b for g in groups for b in g] == list(range(8))
