"""The S3 endpoint goes away for a few seconds mid-job: downloads and commits retry, nothing is lost."""

from __future__ import annotations

import time
from pathlib import Path

from tests.chaos_helpers import (
    CHAOS,
    EntryOptions,
    Stopwatch,
    assert_exactly_once,
    expected_lines,
    make_component,
    put_items,
    start_coordinator,
    total_starts,
    wait_exit,
)
from tests.fleet_helpers import fleet_env, wait_for, workers

pytestmark = CHAOS

COUNT = 200


def test_s3_outage_mid_job(tmp_path: Path, rabbitmq, s3) -> None:  # type: ignore[no-untyped-def]
    bucket = s3.make_bucket()
    client, name = s3.client(), bucket.removeprefix("s3://")
    put_items(client, name, "in", COUNT)
    calls = tmp_path / "calls"
    calls.mkdir()
    spec = make_component(tmp_path / "code", EntryOptions(delay=0.1, calls=calls))
    env = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")
    log = tmp_path / "run.log"
    with workers(rabbitmq.url, tmp_path / "workers", env, ["node-a", "node-b"]):
        run = start_coordinator(
            "run", spec, "--broker", rabbitmq.url, "--store", f"{bucket}/store",
            "--input", f"data={bucket}/in", "--output", f"out={bucket}/out", "--mini_batch_size", "2",
            "--no-progress", env=env, log=log,
        )  # fmt: skip
        assert wait_for(lambda: total_starts(calls) >= 30, 60), "the job did not start"
        clock = Stopwatch()
        s3.stop()
        time.sleep(4)
        s3.start()
        outage, during = clock(), total_starts(calls)
        assert run.poll() is None and during < COUNT, "the job ended during the outage; make it longer"
        rc = wait_exit(run, 150, log)
    print(f"\nS3 down {outage:.1f}s; job done {clock() - outage:.1f}s later")
    assert rc == 0, log.read_text()
    merged = client.get_object(Bucket=name, Key="out/parallel_run_step.txt")["Body"].read().decode()
    assert_exactly_once(merged, expected_lines(COUNT))
