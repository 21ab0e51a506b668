"""The trust boundary's pure checks: store roots, headers, seals, the report gate, frames, key collisions."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.broker.base import PRIOR_TRIES_HEADER, TRIES_SIG_HEADER, Delivery, attempt_of, job_of, prior_tries
from common.errors import StorageError, UsageError
from common.messages import BatchMessage, BatchResult, InputBinding, Item, JobEvent, bundle_reports, encode_report
from common.parts.frames import FrameMismatch, checked_rows, header
from common.rejections import Rejections
from common.safepath import local_key
from common.signing import (
    SignatureError,
    open_report,
    seal_report,
    sign_announcement,
    sign_batch,
    sign_tries,
    verify_announcement,
    verify_tries,
)
from common.storage import NameRun, ObjectInfo, uri_within
from coordinator.follow.gate import ReportGate
from coordinator.plan.collisions import Collisions
from tests.runtime_helpers import make_job
from worker.intake.admit import admit

KEY = b"k" * 32
JOB = make_job(Path("/srv/store-root"), Path("/code"), Path("/data"), job_id="job-a", run_max_try=3)
AREA = JOB.store_uri


@pytest.mark.parametrize(
    ("uri", "root", "inside"),
    [
        ("s3://b/store/job/job.json", "s3://b/store", True),
        ("s3://b/store", "s3://b/store/", True),
        ("s3://b/storex/job.json", "s3://b/store", False),
        ("s3://b/store/../evil/job.json", "s3://b/store", False),
        ("s3://b/store//job.json", "s3://b/store", False),
        ("s3://b/store/./job.json", "s3://b/store", False),
        ("s3://other/store/job.json", "s3://b/store", False),
        ("s3://b/store/job.json", "s3://", False),
        ("/srv/store/job/job.json", "/srv/store", True),
        ("/srv/store/../etc/passwd", "/srv/store", False),
        ("/srv/storex/job.json", "/srv/store", False),
        ("s3://b/store/job.json", "/srv/store", False),
        ("/srv/store/job.json", "s3://b/store", False),
    ],
)
def test_uri_within(uri: str, root: str, inside: bool) -> None:
    assert uri_within(uri, root) is inside


@pytest.mark.parametrize(
    ("headers", "prior", "attempt"),
    [
        ({}, 0, 1),
        ({PRIOR_TRIES_HEADER: 2, "x-delivery-count": 1}, 2, 4),
        ({PRIOR_TRIES_HEADER: "x"}, None, 1),
        ({PRIOR_TRIES_HEADER: -4}, None, 1),
        ({PRIOR_TRIES_HEADER: True}, None, 1),
        ({PRIOR_TRIES_HEADER: 10**12}, None, 1),
        ({"x-delivery-count": "many"}, 0, 1),
        ({"x-delivery-count": -1, PRIOR_TRIES_HEADER: 1}, 1, 2),
    ],
)
def test_malformed_tries_headers_never_raise(headers: dict[str, object], prior: int | None, attempt: int) -> None:
    assert prior_tries(headers) == prior
    assert attempt_of(headers) == attempt


def test_job_of_inverts_queue_names() -> None:
    assert job_of("bf.job-a.reports") == "job-a"
    assert job_of("bf.job-a.batches") == "job-a"
    assert job_of("bf..reports") is None
    assert job_of("announce") is None


def batch(batch_id: int = 1, key: bytes | None = KEY, job_id: str = "job-a") -> bytes:
    message = BatchMessage(job_id=job_id, batch_id=batch_id, input="data", items=[Item(uri="/data/a", name="a")])
    return (sign_batch(key, message) if key else message).model_dump_json().encode()


def delivery(body: bytes, headers: dict[str, object] | None = None) -> Delivery:
    headers = headers or {}
    return Delivery("bf.job-a.batches", body, attempt_of(headers), None, headers)


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (batch(), {}, None),
        (batch(), {PRIOR_TRIES_HEADER: 1, TRIES_SIG_HEADER: sign_tries(KEY, batch(), 1)}, None),
        (batch(), {PRIOR_TRIES_HEADER: 1}, "header is unsigned"),
        (batch(), {PRIOR_TRIES_HEADER: 2, TRIES_SIG_HEADER: sign_tries(KEY, batch(), 1)}, "header is forged"),
        (batch(), {PRIOR_TRIES_HEADER: 1, TRIES_SIG_HEADER: sign_tries(KEY, batch(2), 1)}, "header is forged"),
        (batch(), {PRIOR_TRIES_HEADER: "x"}, "malformed x-batchfleet-prior-tries"),
        (batch(), {PRIOR_TRIES_HEADER: -4}, "malformed x-batchfleet-prior-tries"),
        (batch(), {PRIOR_TRIES_HEADER: 99999}, "malformed x-batchfleet-prior-tries"),
        (batch(key=None), {}, "is unsigned"),
        (batch(key=b"o" * 32), {}, "is forged"),
        (batch(job_id="job-b"), {}, "message for job job-b"),
        (b"\xff\x00 not json", {}, "unparseable batch message"),
        (b'{"v":1,"job_id":"job-a","batch_id":-1,"items":[]}', {}, "unparseable batch message"),
    ],
)
def test_admit_refuses_what_cannot_be_believed(body: bytes, headers: dict[str, object], expected: str | None) -> None:
    verdict = admit(delivery(body, headers), JOB, KEY)
    if expected is None:
        assert isinstance(verdict, BatchMessage)
    else:
        assert isinstance(verdict, str) and expected in verdict, verdict


def test_an_unknown_input_is_refused_not_crashed_on() -> None:
    message = BatchMessage(job_id="job-a", batch_id=1, input="nope", items=[Item(uri="/d/a", name="a")])
    verdict = admit(delivery(sign_batch(KEY, message).model_dump_json().encode()), JOB, KEY)
    assert isinstance(verdict, str) and "names no input" in verdict


def test_a_genuine_copy_over_its_tries_is_dead_lettered_as_out_of_tries() -> None:
    body = batch()
    headers: dict[str, object] = {
        PRIOR_TRIES_HEADER: 2,
        TRIES_SIG_HEADER: sign_tries(KEY, body, 2),
        "x-delivery-count": 1,
    }
    assert admit(delivery(body, headers), JOB, KEY) == "delivery_limit"


def test_tries_signature_checks() -> None:
    verify_tries(KEY, b"body", 2, sign_tries(KEY, b"body", 2))
    verify_tries(KEY, b"body", 2, sign_tries(KEY, b"body", 2).encode())
    for sig in (None, "", 5, sign_tries(b"o" * 32, b"body", 2), sign_tries(KEY, b"body", 1)):
        with pytest.raises(SignatureError):
            verify_tries(KEY, b"body", 2, sig)


def test_announcement_and_submission_signatures_do_not_stand_in_for_each_other() -> None:
    sig = sign_announcement(KEY, "job-a", "s3://b/store/job-a/job.json", "active")
    verify_announcement(KEY, "job-a", "s3://b/store/job-a/job.json", "active", sig)
    for args in [("job-b", "s3://b/store/job-a/job.json", "active"), ("job-a", "s3://evil/job.json", "active"),
                 ("job-a", "s3://b/store/job-a/job.json", "ended")]:  # fmt: skip
        with pytest.raises(SignatureError):
            verify_announcement(KEY, *args, sig)
    with pytest.raises(SignatureError, match="forged"):
        verify_announcement(KEY, "job-a", "s3://b/store/job-a/job.json", "active", sig, submission=True)
    with pytest.raises(SignatureError, match="unsigned"):
        verify_announcement(KEY, "job-a", "s3://b/store/job-a/job.json", "active", None)


def test_a_sealed_report_opens_only_for_its_job_and_key() -> None:
    sealed = seal_report(KEY, "job-a", b"Rbody")
    assert open_report(KEY, "job-a", sealed) == b"Rbody"
    for key, job, message, reason in [
        (KEY, "job-b", sealed, "forged"),
        (b"o" * 32, "job-a", sealed, "forged"),
        (KEY, "job-a", b"Rbody", "unsigned"),
        (KEY, "job-a", sealed[:-1] + b"X", "forged"),
        (KEY, "job-a", b"S", "unsigned"),
    ]:
        with pytest.raises(SignatureError) as caught:
            open_report(key, job, message)
        assert caught.value.reason == reason


def result(batch_id: int = 0, part: str | None = f"{AREA}/parts/n/p.seg#10+5", **extra: Any) -> BatchResult:
    fields: dict[str, Any] = {"job_id": "job-a", "batch_id": batch_id, "node_id": "n", "attempt": 1,
                              "outcome": "committed", "total": 1, "succeeded": 1, "part": part, **extra}  # fmt: skip
    return BatchResult(**fields)


def gate(key: bytes | None = KEY, secrets: tuple[str, ...] = ()) -> ReportGate:
    return ReportGate(JOB, key, 4, Rejections(logging.getLogger("test.gate"), "bf.job-a.reports"), secrets)


@pytest.mark.parametrize(
    ("report", "kind"),
    [
        (result(part="/etc/passwd#0+100"), "report of a part outside the job area"),
        (result(part=f"{AREA}/parts/../../../etc/passwd#0+100"), "report of a part outside the job area"),
        (result(part=f"{AREA}/job.json#0+10"), "report of a part outside the job area"),
        (result(part=f"{AREA}/parts/n/p.seg#-5+10"), "report of a part outside the job area"),
        (result(part=None), "report of a part outside the job area"),
        (result(batch_id=4), "report on a batch not in the plan"),
        (result(batch_id=-1), "report on a batch not in the plan"),
        (result().model_copy(update={"job_id": "job-b"}), "report for another job"),
    ],
)
def test_the_gate_drops_reports_it_cannot_act_on(report: BatchResult, kind: str) -> None:
    g = gate()
    assert g.reports(seal_report(KEY, "job-a", encode_report(report))) == []
    assert g.rejections.counts() == {kind: 1}


def test_the_gate_drops_unsigned_and_forged_reports_and_logs_each_kind_once(caplog: pytest.LogCaptureFixture) -> None:
    g = gate()
    body = encode_report(result())
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert g.reports(body) == []
            assert g.reports(seal_report(b"o" * 32, "job-a", body)) == []
            assert g.reports(seal_report(KEY, "job-b", body)) == []
    assert g.rejections.counts() == {"unsigned report": 3, "forged report": 6}
    assert caplog.text.count("dropped on bf.job-a.reports") == 2
    assert "claiming to be node n" in caplog.text


def test_the_gate_opens_bundles_and_masks_secrets() -> None:
    failed = result(1, part=None, outcome="failed", error="denied: password=hunter22 key=Sup3rS3cretV4lue",
                    traceback="Traceback: Sup3rS3cretV4lue")  # fmt: skip
    event = JobEvent(job_id="job-a", node_id="n", kind="init_failed", detail="no model at s3://u:pw1234@h/m")
    message = seal_report(KEY, "job-a", bundle_reports([encode_report(result(0)), encode_report(failed),
                                                       encode_report(event)])[0])  # fmt: skip
    reports = gate(secrets=("Sup3rS3cretV4lue",)).reports(message)
    assert [type(r).__name__ for r in reports] == ["BatchResult", "BatchResult", "JobEvent"]
    text = " ".join(str(r.model_dump()) for r in reports)
    assert "hunter22" not in text and "Sup3rS3cretV4lue" not in text and "pw1234" not in text, text


def test_without_a_key_the_gate_believes_sealed_and_plain_reports() -> None:
    body = encode_report(result())
    assert len(gate(key=None).reports(body)) == 1
    assert len(gate(key=None).reports(seal_report(KEY, "job-a", body))) == 1


ROWS = b"rows!"
HEAD3 = header(3, 1, 2, 0, ROWS)


@pytest.mark.parametrize(
    ("window", "head", "batch_id", "length", "ok"),
    [
        (HEAD3 + ROWS, len(HEAD3), 3, 5, True),
        (b"#bf 2 1 1 0 3\nabc" + HEAD3 + ROWS, 17 + len(HEAD3), 3, 5, True),
        (b"#bf 3 1 2 0 5\n" + ROWS, 14, 3, 5, True),  # a frame written before checksums
        (header(2, 1, 2, 0, ROWS) + ROWS, len(header(2, 1, 2, 0, ROWS)), 3, 5, False),
        (header(3, 1, 2, 0, ROWS + b"x") + ROWS, len(header(3, 1, 2, 0, ROWS + b"x")), 3, 5, False),
        (b"secret file text", 6, 3, 10, False),
        (b"#bf 3 1 1 0 5\nxx" + ROWS, 16, 3, 5, False),
    ],
)
def test_a_part_is_merged_only_under_its_own_frame_header(
    window: bytes, head: int, batch_id: int, length: int, ok: bool
) -> None:
    if ok:
        assert checked_rows(window, head, batch_id, length, "ref") == window[head:]
    else:
        with pytest.raises(FrameMismatch):
            checked_rows(window, head, batch_id, length, "ref")


@pytest.mark.parametrize(
    ("rel", "local"),
    [("a/b.txt", "a/b.txt"), ("a\\b.txt", "a/b.txt"), ("a//b.txt", "a/b.txt"), ("./a/b.txt", "a/b.txt")],
)
def test_local_key(rel: str, local: str) -> None:
    assert local_key(rel) == local


class FakeStore:
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def size(self, uri: str) -> int:
        if uri.removeprefix("s3://b/in/") in self.keys:
            return 1
        raise StorageError(f"{uri} is gone")


def listing(keys: list[str]) -> Iterator[ObjectInfo]:
    return (ObjectInfo(f"s3://b/in/{k}", k, 1) for k in keys)


@pytest.mark.parametrize(
    ("keys", "pair"),
    [
        (["a/b.txt", "a\\b.txt"], ("a/b.txt", "a\\b.txt")),
        (["a//b.txt", "a/b.txt"], ("a/b.txt", "a//b.txt")),
        (["a//b.txt", "a\\b.txt"], ("a//b.txt", "a\\b.txt")),
        (["a/b.txt", "a/c.txt", "x\\y.txt", "../up.txt"], None),
    ],
)
def test_colliding_keys_are_refused_naming_both(keys: list[str], pair: tuple[str, str] | None) -> None:
    binding = InputBinding(name="data", uri="s3://b/in")
    checked = Collisions(binding, FakeStore(keys)).listing(listing(keys))  # type: ignore[arg-type]
    # The planner's fast path lists names a folder (or page) at a time: the same rule applies.
    runs = [NameRun("s3://b/in/", "", keys[:1]), NameRun("s3://b/in/", "", keys[1:])]
    by_runs = Collisions(binding, FakeStore(keys)).runs(iter(runs))  # type: ignore[arg-type]
    if pair is None:
        assert [info.rel for info in checked] == keys
        assert list(by_runs) == runs
        return
    for planned in (checked, by_runs):
        with pytest.raises(UsageError) as caught:
            list(planned)  # type: ignore[call-overload]
        assert all(repr(key) in caught.value.line() for key in pair), caught.value.line()
        assert caught.value.exit_code == 2


OWN_SECRETS = {"BATCHFLEET_SIGNING_KEY": "k" * 20, "BATCHFLEET_SIGNING_KEY_FILE": "/etc/k",
               "BATCHFLEET_BROKER": "amqp://u:p@h/", "BATCHFLEET_BROKER_PASSWORD_FILE": "/etc/p",
               "CREDENTIALS_DIRECTORY": "/run/credentials/x"}  # fmt: skip


def with_own_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment holds batchfleet's secrets, a store and an AWS key; returns the secrets."""
    for name, value in {**OWN_SECRETS, "BATCHFLEET_STORE": "s3://b/s", "AWS_SECRET_ACCESS_KEY": "aws"}.items():
        monkeypatch.setenv(name, value)
    return OWN_SECRETS


def test_children_start_without_batchfleets_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.run.childenv import secrets_withheld

    own = with_own_secrets(monkeypatch)
    with secrets_withheld():
        inside = dict(os.environ)
    assert not set(own) & set(inside)
    assert inside["BATCHFLEET_STORE"] == "s3://b/s" and inside["AWS_SECRET_ACCESS_KEY"] == "aws"
    assert all(os.environ[name] == value for name, value in own.items()), "put back for the node"


def child_sees(out: Any) -> None:
    out.put((sys.argv, sorted(os.environ)))


def test_a_spawned_child_gets_neither_the_secrets_nor_the_nodes_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """spawn hands a child the parent's sys.argv too: `--broker amqp://user:pass@...` must not reach it."""
    import multiprocessing

    from worker.run.childenv import secrets_withheld

    own = with_own_secrets(monkeypatch)
    argv = ["batchfleet", "worker", "--broker", "amqp://u:hunter2-password@h/", "--signing-key-file", "/etc/k"]
    monkeypatch.setattr(sys, "argv", argv)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=child_sees, args=(out,))
    with secrets_withheld():
        child.start()
    seen_argv, seen_env = out.get(timeout=60)
    child.join(60)
    out.close()
    out.join_thread()
    assert seen_argv == argv[:1] and sys.argv == argv, "the child got the program name; the node keeps its argv"
    assert not set(own) & set(seen_env) and "AWS_SECRET_ACCESS_KEY" in seen_env


def test_environment_builds_start_without_batchfleets_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uv and pip run packages' own build code: it must not see the key or the broker's password."""
    from common.messages import PythonEnvironment
    from worker.run import environment as envmod

    own = with_own_secrets(monkeypatch)
    seen: list[dict[str, str]] = []

    def run(step: list[str], stdout: Any, env: dict[str, str], **_kw: Any) -> Any:
        seen.append(env)
        if step[1] == "venv" or step[1:3] == ["-m", "venv"]:
            Path(step[-1]).mkdir(parents=True, exist_ok=True)
        return subprocess.CompletedProcess(step, 0)

    monkeypatch.setattr(envmod.subprocess, "run", run)
    envmod.ensure_environment(PythonEnvironment(requirements=["x==1"]), tmp_path / "work", tmp_path / "log.txt")
    assert len(seen) == 2
    for env in seen:
        assert not set(own) & set(env), sorted(set(own) & set(env))
        assert env["BATCHFLEET_STORE"] == "s3://b/s" and env["AWS_SECRET_ACCESS_KEY"] == "aws"


def test_pipeline_command_steps_start_without_batchfleets_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command step is user code run by the coordinator: it gets the environment minus the secrets."""
    from coordinator.pipeline.command import _environment, _execute, parse_command

    own = with_own_secrets(monkeypatch)
    doc = parse_command({"command": "env", "environment_variables": {"STEP_SETTING": "on"}}, "step prep")
    log_path = tmp_path / "std_log.txt"
    script = f"import os; open({str(tmp_path / 'env.txt')!r}, 'w').write(chr(10).join(sorted(os.environ)))"
    code, reason = _execute(f'{sys.executable} -c "{script}"', tmp_path, _environment(doc), log_path, None)
    assert code == 0, reason
    names = set((tmp_path / "env.txt").read_text().splitlines())
    assert not set(own) & names, sorted(set(own) & names)
    assert {"BATCHFLEET_STORE", "AWS_SECRET_ACCESS_KEY", "STEP_SETTING"} <= names


def test_the_submitter_believes_only_an_answer_signed_by_the_fleet() -> None:
    """A refusal makes `submit` delete the job's area: a forged one must be ignored."""
    import queue

    from common.broker.memory import MemoryBroker
    from common.messages import SubmitReply
    from common.signing import sign_reply
    from coordinator.service import await_reply

    broker = MemoryBroker()
    reply_to = broker.declare_reply_queue()
    sink: queue.Queue[Delivery] = queue.Queue()
    broker.consume(reply_to, 10, sink)
    forged = [
        SubmitReply(job_id="job-a", accepted=False, reason="go away"),
        SubmitReply(
            job_id="job-a", accepted=False, reason="go away", sig=sign_reply(b"o" * 32, "job-a", False, "go away", "")
        ),
        SubmitReply(job_id="job-a", accepted=False, reason="x", sig=sign_reply(KEY, "job-a", True, "running", "c")),
    ]
    genuine = SubmitReply(job_id="job-a", accepted=True, reason="running", coordinator="c",
                          sig=sign_reply(KEY, "job-a", True, "running", "c"))  # fmt: skip
    broker.publish(reply_to, [r.model_dump_json().encode() for r in [*forged, genuine]])
    assert await_reply(sink, broker, "job-a", 5.0, KEY) == genuine
    broker.publish(reply_to, [forged[0].model_dump_json().encode()])
    assert await_reply(sink, broker, "job-a", 0.5, KEY) is None


LOAD_CASES = {
    "job file outside the node's stores": "outside the stores this node serves",
    "announced id is not the job file's": "not the announced",
    "job file outside its own area": "not in the area of its job",
    "code outside the node's stores": "is outside the stores",
    "stored code without a snapshot hash": "without a snapshot hash",
    "job has ended": "has ended",
    "control": None,
}


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_a_node_loads_an_announced_job_only_from_its_stores(tmp_path: Path, case: str) -> None:
    """Without a key to check, these are all that keep a publisher's job file and code off a node."""
    from common.jobarea import JobArea
    from common.messages import JobAnnouncement
    from common.storage import StorageOptions
    from worker.intake.announcements import JobRefused, load_job

    served, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    job = make_job(tmp_path, served / "_code" / "abc", tmp_path / "in", job_id="job-x")
    job = job.model_copy(update={"store_uri": str(served / "job-x"), "code_hash": "abc"})
    if case == "code outside the node's stores":
        job = job.model_copy(update={"code_uri": str(elsewhere / "code")})
    if case == "stored code without a snapshot hash":
        job = job.model_copy(update={"code_uri": "s3://bucket/_code/abc", "code_hash": ""})
    where = served / "job-x"
    if case == "job file outside the node's stores":
        where = elsewhere / "job-x"
    if case == "job file outside its own area":
        where = served / "other-job"
    where.mkdir(parents=True)
    (where / "job.json").write_text(job.model_dump_json())
    if case == "job has ended":
        Path(JobArea(job.store_uri).ended).write_text("")
    announced = "job-y" if case == "announced id is not the job file's" else "job-x"
    announcement = JobAnnouncement(job_id=announced, job_uri=str(where / "job.json"), state="active")
    roots = (str(served.resolve()), "s3://bucket")
    expected = LOAD_CASES[case]
    if expected is None:
        assert load_job(announcement, roots, StorageOptions()).job_id == "job-x"
        return
    with pytest.raises(JobRefused) as refused:
        load_job(announcement, roots, StorageOptions())
    assert expected in refused.value.line(), refused.value.line()
