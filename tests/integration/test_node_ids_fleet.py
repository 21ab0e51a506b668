"""Two workers started with the same node id against the real servers: the job's coordinator refuses the
second (one line naming both hosts), the job completes, and neither node overwrote the other's files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fleet_helpers import COMPONENT, fleet_env, run_cli, spawn_worker, stop

pytestmark = pytest.mark.integration

SLOW_ENTRY = """\
import os, time

def run(mini_batch):
    time.sleep(0.1)
    return [os.path.basename(p) for p in mini_batch]
"""


def test_a_duplicate_node_id_is_refused_and_shares_no_file(tmp_path: Path, rabbitmq, s3) -> None:
    bucket = s3.make_bucket()
    client, name = s3.client(), bucket.removeprefix("s3://")
    for i in range(40):
        client.put_object(Bucket=name, Key=f"in/item{i:03d}.txt", Body=str(i).encode())
    code = tmp_path / "code"
    code.mkdir()
    (code / "component.yaml").write_text(COMPONENT)
    (code / "entry.py").write_text(SLOW_ENTRY)
    env = fleet_env(s3.endpoint_url, BATCHFLEET_STORE=f"{bucket}/store")  # signed, as a fleet is
    logs = [tmp_path / "twin-a.log", tmp_path / "twin-b.log"]
    procs = []
    for log in logs:
        with open(log, "ab") as out:
            procs.append(spawn_worker(rabbitmq.url, "twin", tmp_path, env, 1, out))
    try:
        result = run_cli(
            "run", code / "component.yaml", "--broker", rabbitmq.url, "--store", f"{bucket}/store",
            "--input", f"data={bucket}/in", "--output", f"out={bucket}/out", "--mini_batch_size", "2",
            "--no-progress", env=env,
        )  # fmt: skip
    finally:
        for proc in procs:
            stop(proc)
    assert result.returncode == 0, result.stderr + result.stdout
    merged = client.get_object(Bucket=name, Key="out/parallel_run_step.txt")["Body"].read().decode()
    assert sorted(merged.splitlines()) == [f"item{i:03d}.txt" for i in range(40)]
    texts = [log.read_text() for log in logs]
    refused = [line for text in texts for line in text.splitlines() if "leaving job" in line]
    assert len(refused) == 1, texts
    hosts = re.findall(r"\(pid \d+\)", refused[0])
    assert "node id twin is already used by" in refused[0] and len(set(hosts)) >= 2, refused[0]
    assert "Traceback" not in "".join(texts)
    keys = [obj["Key"] for obj in client.list_objects_v2(Bucket=name, Prefix="")["Contents"]]
    written = [k for k in keys if "/parts/twin/" in k or "/twin/" in k]
    assert written, keys
    # Every file either node wrote names the writing process's session token (8 hex digits): in its
    # name, or (parts on S3) in its folder's.
    assert all(re.search(r"\.[0-9a-f]{8}[./]", k.split("/twin/", 1)[1]) for k in written), written
