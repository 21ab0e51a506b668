"""The streaming merge against a real S3 endpoint that goes away: it waits the outage out."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from common.messages import BatchResult
from common.storage import open_storage
from common.storage.s3 import S3Storage
from coordinator import merger as merging
from coordinator.follow.tally import Tally
from coordinator.merger import StreamMerger
from tests.runtime_helpers import make_job
from tests.servers import MotoS3
from worker.commit.parts import PartWriter

pytestmark = pytest.mark.integration

COUNT = 6


def committed(batch: int, part: str) -> BatchResult:
    return BatchResult(job_id="job-1", batch_id=batch, node_id="n1", attempt=1, outcome="committed",
                       total=1, succeeded=1, part=part)  # fmt: skip


def test_the_merge_waits_out_an_s3_outage(
    tmp_path: Path, s3: MotoS3, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(merging, "BACKOFF_MAX", 0.5)
    bucket = s3.make_bucket()
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data").model_copy(
        update={"store_uri": f"{bucket}/store/job-1", "output_uri": f"{bucket}/out"}
    )
    writer = PartWriter(open_storage(job.store_uri, s3.options), f"{job.store_uri}/parts/n1", "p")
    refs = [writer.commit(batch, 1, 1, 0, b"row %d\n" % batch) for batch in range(COUNT)]
    tally = Tally(COUNT)
    merger = StreamMerger(job, tally, s3.options)
    # One try per read, so the outage reaches the merge at once instead of boto3's own retries.
    merger._reader.storage = S3Storage(s3.options, max_attempts=1, connect_timeout=1)
    merger.start()
    for batch in range(3):
        tally.apply(committed(batch, refs[batch]))
    assert wait(lambda: merger.cursor == 3)
    s3.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="coordinator.merger"):
            for batch in range(3, COUNT):
                tally.apply(committed(batch, refs[batch]))
            assert wait(lambda: "merging the output waits for the store" in caplog.text)
        assert merger.cursor == 3, "the merge stays at the part it could not read"
    finally:
        s3.start()
    assert merger.finish(keep=True) == (f"{bucket}/out/parallel_run_step.txt", COUNT)
    body = s3.client().get_object(Bucket=bucket.removeprefix("s3://"), Key="out/parallel_run_step.txt")["Body"]
    assert body.read() == b"".join(b"row %d\n" % batch for batch in range(COUNT))


def wait(predicate, timeout: float = 20) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
