"""A torn frame in the middle of a segment (a write cut short, then more commits after it), then the
coordinator is killed and followed again: the restarted coordinator must still find every frame
committed after the torn one, whose reports the first coordinator had already taken and acked."""

from __future__ import annotations

import time
from pathlib import Path

from common.parts.frames import header
from tests.chaos.conftest import LocalJobFactory
from tests.chaos_helpers import (
    CHAOS,
    assert_exactly_once,
    expected_lines,
    frames,
    kill_group,
    only_job,
    start_coordinator,
    starts,
    state,
    total_starts,
    wait_exit,
)
from tests.fleet_helpers import wait_for, workers

pytestmark = CHAOS


def _tear(segments: list[Path]) -> dict[Path, int]:
    """Append half a frame to each live segment (as a full disk would leave it); where it starts."""
    data = b"a row the disk had no room for\n" * 8
    torn = header(0, 9, 8, 0, data) + data[: len(data) // 2]
    offsets = {}
    for segment in segments:
        with open(segment, "ab") as handle:  # O_APPEND, like the child writing beside us
            offsets[segment] = handle.tell()
            handle.write(torn)
    return offsets


def _committed_by_first(area: Path) -> int:
    try:
        return int(state(area)["batches_committed"])  # type: ignore[call-overload]
    except (OSError, ValueError, KeyError):
        return 0


def test_torn_frame_mid_segment_then_coordinator_restart(local_job: LocalJobFactory) -> None:
    job = local_job(400, delay=0.1)
    first, second = job.root / "run.log", job.root / "follow.log"
    with workers(job.url, job.logs, job.env, ["node-a", "node-b"]):
        run = start_coordinator(*job.run_args("--mini_batch_size", "2"), env=job.env, log=first)
        job_id = only_job(job.store)
        area = job.area(job_id)
        assert wait_for(lambda: len(list(area.glob("parts/*/*.seg"))) >= 4 and total_starts(job.calls) >= 16, 40)
        torn_at = _tear(sorted(area.glob("parts/*/*.seg")))
        # The first coordinator folds (and acks the reports of) batches committed after the torn frames.
        assert wait_for(lambda: _committed_by_first(area) >= 40, 60), "the first coordinator made no progress"
        kill_group(run)
        time.sleep(1)
        assert total_starts(job.calls) < job.count, "the job finished before the coordinator was killed"
        follow = start_coordinator(*job.attach_args("follow", job_id), env=job.env, log=second)
        rc = wait_exit(follow, 120, second)
    assert rc == 0, second.read_text()
    after = [s for s, offset in torn_at.items() if s.stat().st_size > offset + 200]
    assert after, "no frame was committed after a torn one; the test did not test anything"
    assert_exactly_once(job.merged(), expected_lines(job.count))
    ran = starts(job.calls)
    assert len(ran) == job.count and set(ran.values()) == {1}, ran.most_common(3)
    assert {r.batch_id for r in frames(str(area))} == set(range(job.count // 2))
    assert state(area)["state"] == "succeeded"
