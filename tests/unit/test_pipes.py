"""readable(): a child's pipe waited on as Connection.poll would, without a selector per call."""

from __future__ import annotations

import multiprocessing
import threading
import time

from worker.run.pipes import readable


def test_empty_pipe_is_not_readable_and_a_message_makes_it_so() -> None:
    ours, theirs = multiprocessing.Pipe()
    try:
        assert not readable(ours, 0)
        theirs.send(("done", []))
        assert readable(ours, 0) and readable(ours, None)
        assert ours.recv() == ("done", [])
        assert not readable(ours, 0)
    finally:
        ours.close()
        theirs.close()


def test_a_closed_other_end_is_readable_so_recv_tells() -> None:
    ours, theirs = multiprocessing.Pipe()
    theirs.close()
    try:
        assert readable(ours, 1.0)
    finally:
        ours.close()


def test_it_waits_up_to_the_timeout_and_wakes_on_a_message() -> None:
    ours, theirs = multiprocessing.Pipe()
    try:
        started = time.monotonic()
        assert not readable(ours, 0.05)
        assert time.monotonic() - started >= 0.04
        timer = threading.Timer(0.05, theirs.send, args=(("ran",),))
        timer.start()
        assert readable(ours, 10)
        timer.join()
    finally:
        ours.close()
        theirs.close()
