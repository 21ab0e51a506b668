"""Announcements from the broker: workers believe only signed ones, read job files only from their
stores, check the id, and never serve a job that ended again (so a replay runs nothing)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.messages import InputBinding, JobConfig
from common.settings import RunSettings
from common.signing import sign_announcement, snapshot_digest
from tests.fleet_helpers import COMPONENT, run_cli, start_worker, stop, wait_for
from tests.integration.fault_helpers import fleet_run_args, fleet_setup, job_ids, put_items
from tests.security.conftest import ATTACKER_KEY, Hostile, log_text
from tests.servers import MotoS3

pytestmark = pytest.mark.security

# init() leaves a file per start: the evidence that a job's code ran on a node.
MARKED_ENTRY = """\
import os
import uuid
from pathlib import Path

MARKS = Path({marks!r})


def init():
    MARKS.mkdir(parents=True, exist_ok=True)
    (MARKS / uuid.uuid4().hex).write_text(str(os.getpid()))


def run(mini_batch):
    return [os.path.basename(path) for path in mini_batch]
"""


def code_folder(root: Path, marks: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "component.yaml").write_text(COMPONENT)
    (root / "entry.py").write_text(MARKED_ENTRY.format(marks=str(marks)))
    return root


def marks(folder: Path) -> int:
    return len(list(folder.iterdir())) if folder.exists() else 0


def plant_job(s3: MotoS3, area: str, job_id: str, code_uri: str, marks_dir: Path, bucket: str) -> str:
    """An attacker's job: job.json under `area` and, at `code_uri`, code whose init() leaves a mark."""
    client = s3.client()
    code_bucket, _, code_prefix = code_uri.removeprefix("s3://").partition("/")
    entry = MARKED_ENTRY.format(marks=str(marks_dir)).encode()
    client.put_object(Bucket=code_bucket, Key=f"{code_prefix}/entry.py", Body=entry)
    snapshot = marks_dir.with_name(f"{marks_dir.name}-snapshot")  # the hash a node checks the download against
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "entry.py").write_bytes(entry)
    job = JobConfig(job_id=job_id, name="evil", created_at=time.time(), code_uri=code_uri, entry_script="entry.py",
                    code_hash=snapshot_digest(snapshot),
                    inputs={"data": InputBinding(name="data", uri=f"{bucket}/in")}, input_data=["data"],
                    output_uri=f"{bucket}/evil-out", store_uri=area, settings=RunSettings())  # fmt: skip
    area_bucket, _, area_prefix = area.removeprefix("s3://").partition("/")
    client.put_object(Bucket=area_bucket, Key=f"{area_prefix}/job.json", Body=job.model_dump_json().encode())
    return f"{area}/job.json"


def test_a_replayed_announcement_of_an_ended_job_runs_nothing(
    tmp_path: Path, signed_fleet: dict[str, Any], hostile: Hostile, s3: MotoS3
) -> None:
    """Even genuinely signed (as captured off the broker), a job that ended is not served again."""
    fleet = signed_fleet
    put_items(s3, fleet["bucket"], 4)
    inits = tmp_path / "inits"
    spec = code_folder(tmp_path / "code", inits) / "component.yaml"
    log = tmp_path / "workers" / "node-a.log"
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1)
    try:
        result = run_cli("run", *fleet_run_args(spec, fleet), env=fleet["env"], timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        ran = marks(inits)
        assert ran >= 1
        job = job_ids(s3, fleet["store"])[0]
        uri = f"{fleet['store']}/{job}/job.json"
        for state in ("preparing", "active"):
            hostile.announce(job, uri, state, sign_announcement(fleet["key"], job, uri, state))
        assert wait_for(lambda: f"not serving job {job}: job {job} has ended" in log_text(log), 30), log_text(log)
        time.sleep(2)  # a child started anyway would have run init() by now
        assert worker.poll() is None
    finally:
        stop(worker)
    assert marks(inits) == ran, "the ended job's code ran again"
    assert log_text(log).count(f"serving job {job} with") == 1


def test_forged_announcements_run_no_code_on_a_keyed_worker(
    tmp_path: Path, signed_fleet: dict[str, Any], hostile: Hostile, s3: MotoS3
) -> None:
    """Unsigned or signed with another key, an announcement is dropped before any job file is read."""
    fleet = signed_fleet
    evil = s3.make_bucket()
    owned = tmp_path / "owned"
    job = f"evil-{uuid.uuid4().hex[:8]}"
    uri = plant_job(s3, f"{fleet['store']}/{job}", job, f"{fleet['store']}/{job}/code", owned, evil)
    log = tmp_path / "workers" / "node-a.log"
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1)
    try:
        assert wait_for(lambda: "ready (pid" in log_text(log), 60), log_text(log)
        hostile.announce(job, uri, "active")
        hostile.announce(job, uri, "active", sign_announcement(ATTACKER_KEY, job, uri, "active"))
        hostile.announce_raw(b'{"v": 1, "job_id": "../../etc", "job_uri": "/etc/passwd", "state": "active"}')
        assert wait_for(lambda: "forged announcement" in log_text(log), 30), log_text(log)
        time.sleep(2)
        assert worker.poll() is None
    finally:
        stop(worker)
    text = log_text(log)
    assert "unsigned announcement" in text and "unreadable announcement" in text, text
    assert marks(owned) == 0, "the attacker's code ran"
    assert f"serving job {job}" not in text


CASES = ["job file in another store", "announced id is not the job file's", "code in another store"]


@pytest.mark.parametrize("case", [*CASES, "control: all in the node's store"])
def test_an_insecure_worker_reads_jobs_only_from_its_stores(
    tmp_path: Path, rabbitmq: Any, hostile: Hostile, s3: MotoS3, case: str
) -> None:
    """Without signatures to check, the store roots and the id check still keep foreign code out; the
    control case shows the same planted job does run once everything lies in the node's store."""
    fleet = fleet_setup(tmp_path, rabbitmq.url, s3, BATCHFLEET_INSECURE="1")
    evil = s3.make_bucket()
    owned = tmp_path / "owned"
    job = f"evil-{uuid.uuid4().hex[:8]}"
    area = f"{evil if case == CASES[0] else fleet['store']}/{job}"
    code = f"{evil}/code" if case == CASES[2] else f"{area}/code"
    uri = plant_job(s3, area, "someone-else" if case == CASES[1] else job, code, owned, evil)
    log = tmp_path / "workers" / "node-a.log"
    worker = start_worker(fleet["url"], "node-a", tmp_path / "workers", fleet["env"], 1)
    try:
        assert wait_for(lambda: "ready (pid" in log_text(log), 60), log_text(log)
        hostile.announce(job, uri, "preparing")
        if case.startswith("control"):
            assert wait_for(lambda: marks(owned) > 0, 60), log_text(log)
        else:
            assert wait_for(lambda: f"not serving job {job}" in log_text(log), 30), log_text(log)
            time.sleep(2)
        assert worker.poll() is None
    finally:
        stop(worker)
    if not case.startswith("control"):
        assert marks(owned) == 0, "the attacker's code ran"
        expected = {CASES[0]: "outside the stores this node serves", CASES[1]: "not the announced",
                    CASES[2]: "code of job"}[case]  # fmt: skip
        assert expected in log_text(log), log_text(log)
