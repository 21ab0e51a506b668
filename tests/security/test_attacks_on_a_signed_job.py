"""One signed fleet job under attack from the broker, while its last mini-batch is held running.

The attacker publishes the issue's forged "committed" reports (parts pointing at a secret file),
reports sealed with its own key or for another job, forged node events and "ended"
announcements, garbage, copies of a genuine batch with malformed or forged tries headers, and
forged dead letters. Each test below checks that one of these wanted outcomes did not happen.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.signing import seal_report, sign_announcement
from tests.fleet_helpers import start_worker, stop, wait_for
from tests.integration.fault_helpers import (
    Coordinator,
    fleet_run_args,
    fleet_setup,
    job_ids,
    make_code,
    put_items,
    read_text,
)
from tests.security.conftest import ATTACKER_KEY, Hostile, forged_event, forged_result, log_text, write_key
from tests.servers import MotoS3

pytestmark = pytest.mark.security

ITEMS = 24  # 12 mini-batches of 2; the last is held until the attacks are in
BATCHES = 12
SECRET = f"TOP-SECRET-{uuid.uuid4().hex}"
MALFORMED_TRIES: list[object] = ["x", -4, 99999]


@dataclass
class Attacked:
    job: str
    result: Any
    names: list[str]
    merged: list[str]
    area: dict[str, str]  # every object of the job area and of the output, by URI
    worker_logs: list[str]
    workers_alive: bool
    attacker_sealed: int  # reports sealed with a key that is not the fleet's (or for another job)
    forged_events: int


def _texts(s3: MotoS3, bucket: str, prefix: str) -> dict[str, str]:
    client = s3.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[f"s3://{bucket}/{obj['Key']}"] = body.decode("utf-8", "replace")
    return found


def _attack(hostile: Hostile, fleet: dict[str, Any], s3: MotoS3, job: str, secret_file: Path) -> tuple[int, int]:
    """Publish every attack; return (reports sealed with a wrong key or job, forged events)."""
    bucket, store = fleet["bucket"], fleet["store"]
    size = len(secret_file.read_bytes())
    parts = [f"{secret_file}#0+{size}", f"{bucket}/secret/secret.txt#0+{size}",
             f"{store}/{job}/parts/../../secret/secret.txt#0+{size}"]  # fmt: skip
    # The issue's attack: unsigned "committed" reports for every batch, parts at the secret.
    forged = [forged_result(job, b, part) for b in range(BATCHES) for part in parts]
    reports = f"bf.{job}.reports"
    hostile.publish(reports, forged)
    sealed = [seal_report(ATTACKER_KEY, job, body) for body in forged[:BATCHES]]
    sealed.append(seal_report(ATTACKER_KEY, job, b"B" + b"\n".join(forged[:4])))
    sealed.append(seal_report(fleet["key"], "another-job", forged[0]))  # genuinely signed, for another job
    hostile.publish(reports, sealed)
    events = [forged_event(job, "refused", "forged refusal"), forged_event(job, "init_failed", "forged")]
    hostile.publish(reports, [*events, *(seal_report(ATTACKER_KEY, job, e) for e in events)])
    hostile.publish(reports, [b"", b"garbage", b"R{not json", b"S" + b"x" * 80, b"B\nR{}\nE{}"])
    # Forged "ended" announcements: unsigned, and signed with the attacker's key.
    job_uri = f"{store}/{job}/job.json"
    hostile.announce(job, job_uri, "ended")
    hostile.announce(job, job_uri, "ended", sign_announcement(ATTACKER_KEY, job, job_uri, "ended"))
    # Copies of a genuine batch (its plan line is in the store) with tries headers it never earned.
    genuine = read_text(s3, f"{store}/{job}/plan.jsonl").splitlines()[3].encode()
    batches = f"bf.{job}.batches"
    for value in MALFORMED_TRIES:
        hostile.publish(batches, [genuine], {"x-batchfleet-prior-tries": value})
    hostile.publish(batches, [genuine], {"x-batchfleet-prior-tries": 1})
    hostile.publish(batches, [genuine], {"x-batchfleet-prior-tries": 2, "x-batchfleet-tries-sig": "v1:" + "0" * 64})
    # Forged dead letters claiming the broker gave up on batches.
    dead = forged[0].replace(b"R", b"", 1)
    hostile.publish(f"bf.{job}.dead", [dead, b"not a batch"], {"x-first-death-reason": "delivery_limit"})
    return len(sealed) + 2, 2 * len(events)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory, rabbitmq: Any, s3: MotoS3) -> Attacked:
    tmp = tmp_path_factory.mktemp("attacked")
    key_file = tmp / "fleet.key"
    write_key(key_file)
    fleet = fleet_setup(tmp, rabbitmq.url, s3, BATCHFLEET_SIGNING_KEY_FILE=str(key_file))
    fleet["key"] = key_file.read_bytes().strip()
    names = put_items(s3, fleet["bucket"], ITEMS)
    secret_file = tmp / "secret.txt"
    secret_file.write_text(f"{SECRET}\n" * 40)
    bucket = fleet["bucket"].removeprefix("s3://")
    s3.client().put_object(Bucket=bucket, Key="secret/secret.txt", Body=secret_file.read_bytes())
    gate = fleet["gate"]
    spec = make_code(tmp / "code", gate.root, gate_item=names[-1])
    logs = tmp / "workers"
    nodes = [start_worker(fleet["url"], name, logs, fleet["env"], 1) for name in ("node-a", "node-b")]
    run = Coordinator(fleet_run_args(spec, fleet, "--mini_batch_size", "2"), fleet["env"], tmp / "coord")
    try:
        gate.wait_started()
        job = job_ids(s3, fleet["store"])[0]
        sealed, events = _attack(Hostile(fleet["url"]), fleet, s3, job, secret_file)
        refused = len(MALFORMED_TRIES) + 2
        worker_logs = lambda: "".join(log_text(logs / f"{n}.log") for n in ("node-a", "node-b"))  # noqa: E731
        assert wait_for(lambda: worker_logs().count(f"dead-lettering batch 3 of {job}") >= refused, 60), worker_logs()
        assert wait_for(lambda: "forged announcement" in worker_logs(), 30), worker_logs()
        gate.open()
        result = run.finish()
        alive = all(node.poll() is None for node in nodes)
    finally:
        run.close()
        for node in nodes:
            stop(node)
    return Attacked(
        job=job,
        result=result,
        names=names,
        merged=read_text(s3, f"{fleet['output']}/parallel_run_step.txt").splitlines(),
        area={**_texts(s3, bucket, f"store/{job}/"), **_texts(s3, bucket, "out/")},
        worker_logs=[log_text(logs / f"{n}.log") for n in ("node-a", "node-b")],
        workers_alive=alive,
        attacker_sealed=sealed,
        forged_events=events,
    )


def _output(a: Attacked, name: str) -> str:
    return next(text for uri, text in a.area.items() if uri.endswith(f"/out/{name}"))


def test_the_issues_forged_committed_reports_change_nothing(attacked: Attacked) -> None:
    """The issue's exact attack: the job still succeeds, every row exactly once, the secret nowhere."""
    a = attacked
    assert a.result.returncode == 0, a.result.stdout + a.result.stderr
    assert f"{BATCHES}/{BATCHES} mini-batches committed, 0 failed; {ITEMS} items succeeded, 0 failed" in a.result.stdout
    assert a.merged == [f"{name} value-{i}" for i, name in enumerate(a.names)]
    leaked = [uri for uri, text in a.area.items() if SECRET in text]
    assert leaked == [], leaked
    assert SECRET not in a.result.stdout + a.result.stderr


def test_reports_sealed_with_another_key_or_for_another_job_are_dropped(attacked: Attacked) -> None:
    job_result = _output(attacked, "logs/job_result.txt")
    assert f"forged report: {attacked.attacker_sealed}" in job_result, job_result


def test_forged_node_events_neither_fail_the_job_nor_drop_a_node(attacked: Attacked) -> None:
    a = attacked
    assert a.result.returncode == 0
    assert "refused the job" not in a.result.stderr and "forged refusal" not in a.result.stderr
    state = next(text for uri, text in a.area.items() if uri.endswith(f"/{a.job}/state.json"))
    assert '"evil"' not in state, "a forged sender counts as a node"


def test_forged_ended_announcements_stop_no_worker(attacked: Attacked) -> None:
    for log in attacked.worker_logs:
        assert log.count(f"stopped serving job {attacked.job}") == 1, log  # only at the genuine end
        assert "unsigned announcement" in log and "forged announcement" in log, log


def test_malformed_tries_headers_are_dead_lettered_and_the_node_keeps_its_connection(attacked: Attacked) -> None:
    logs = "".join(attacked.worker_logs)
    assert logs.count("malformed x-batchfleet-prior-tries header") == len(MALFORMED_TRIES), logs
    assert "Traceback" not in logs
    assert "lost the connection to RabbitMQ" not in logs and "re-opening the consumer" not in logs, logs
    assert attacked.workers_alive


def test_unsigned_and_forged_tries_headers_are_refused(attacked: Attacked) -> None:
    logs = "".join(attacked.worker_logs)
    assert "x-batchfleet-prior-tries header is unsigned" in logs, logs
    assert "x-batchfleet-prior-tries header is forged" in logs, logs


def test_no_try_was_charged(attacked: Attacked) -> None:
    processed = list(csv.DictReader(_output(attacked, "logs/sys/job_report/processed_mini-batches.csv").splitlines()))
    assert len(processed) == BATCHES and {row["tries"] for row in processed} == {"1"}, processed
    attempts = list(csv.DictReader(_output(attacked, "logs/sys/job_report/attempts.csv").splitlines()))
    assert {row["attempt"] for row in attempts} == {"1"} and {row["node"] for row in attempts} <= {"node-a", "node-b"}


def test_forged_dead_letters_fail_no_batch(attacked: Attacked) -> None:
    assert "0 failed" in attacked.result.stdout
    assert not [uri for uri in attacked.area if "/failed/" in uri]


def test_what_was_dropped_is_logged_once_per_kind_and_counted(attacked: Attacked) -> None:
    err = attacked.result.stderr
    assert err.count("unsigned report from a sender claiming to be node evil") == 1, err
    assert err.count(": forged report from") == 1, err
    job_result = _output(attacked, "logs/job_result.txt")
    assert "Dropped as untrusted:" in job_result and "unsigned report: " in job_result, job_result
    assert "batch message refused as malformed: 3" in job_result, job_result
    assert "Dropped as untrusted:" in _output(attacked, "logs/report.html")
