"""Job signing: keys, message signatures bound to job and batch, snapshot digests."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from common.errors import BatchfleetError, UsageError
from common.messages import BatchMessage, Item
from common.signing import (
    FORGED,
    OTHER_JOB,
    UNSIGNED,
    SignatureError,
    _frame,
    _mac,
    canonical_body,
    load_key,
    sign_batch,
    sign_message,
    sign_snapshot,
    snapshot_digest,
    verify_batch,
    verify_message,
    verify_snapshot,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def message(job_id: str = "job-a", batch_id: int = 3) -> BatchMessage:
    items = [Item(uri=f"s3://bucket/in/{n}.csv", name=f"{n}.csv", size=10) for n in range(2)]
    return BatchMessage(job_id=job_id, batch_id=batch_id, items=items)


def signed(msg: BatchMessage, key: bytes = KEY) -> BatchMessage:
    """What the coordinator does before publishing."""
    body = canonical_body(msg.model_dump(exclude={"sig"}))
    return msg.model_copy(update={"sig": sign_message(key, msg.job_id, msg.batch_id, body)})


def received(msg: BatchMessage) -> tuple[bytes, str | None]:
    """What the worker does after parsing the wire JSON: body to verify, signature."""
    parsed = BatchMessage.model_validate_json(msg.model_dump_json())
    return canonical_body(parsed.model_dump()), parsed.sig


# ---------------------------------------------------------------- keys


def test_no_key_configured_is_none() -> None:
    assert load_key(None, {}) is None


def test_key_from_env_value() -> None:
    assert load_key(None, {"BATCHFLEET_SIGNING_KEY": " 0123456789abcdef\n"}) == b"0123456789abcdef"


def test_key_from_env_file(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(b"a-long-enough-secret-key\n")
    path.chmod(0o600)
    assert load_key(None, {"BATCHFLEET_SIGNING_KEY_FILE": str(path)}) == b"a-long-enough-secret-key"


def test_explicit_key_file_wins_over_env(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(b"from-the-explicit-file")
    path.chmod(0o600)
    env = {"BATCHFLEET_SIGNING_KEY": "from-the-environment-value"}
    assert load_key(path, env) == b"from-the-explicit-file"


def test_both_env_settings_refused(tmp_path: Path) -> None:
    env = {"BATCHFLEET_SIGNING_KEY": "x" * 20, "BATCHFLEET_SIGNING_KEY_FILE": str(tmp_path / "k")}
    with pytest.raises(UsageError) as err:
        load_key(None, env)
    assert "set only one" in err.value.line()


@pytest.mark.parametrize("value", ["shortkey", "x" * 15, "  padded-but-short  "[:14]])
def test_short_key_refused_without_showing_it(value: str) -> None:
    with pytest.raises(UsageError) as err:
        load_key(None, {"BATCHFLEET_SIGNING_KEY": value})
    assert "at least 16" in err.value.line()
    assert "\n" not in err.value.line()
    assert value.strip() not in err.value.line()


def test_short_key_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(b"tiny\n")
    path.chmod(0o600)
    with pytest.raises(UsageError, match="at least 16"):
        load_key(path, {})


def test_missing_key_file_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_key(tmp_path / "nope.key", {})


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_group_readable_key_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(b"0123456789abcdef0123")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="common.signing"):
        assert load_key(path, {}) == b"0123456789abcdef0123"
    assert [r.getMessage() for r in caplog.records if "chmod 600" in r.getMessage()]
    assert "0123456789abcdef0123" not in caplog.text


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_private_key_file_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(b"0123456789abcdef0123")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="common.signing"):
        load_key(path, {})
    assert caplog.records == []


# ---------------------------------------------------------------- messages


def test_canonical_body_drops_sig_and_sorts() -> None:
    assert canonical_body({"b": 1, "sig": "x", "a": [1, {"d": None, "c": "é"}]}) == (
        b'{"a":[1,{"c":"\\u00e9","d":null}],"b":1}'
    )


def test_canonical_body_ignores_key_order() -> None:
    assert canonical_body({"a": 1, "b": 2}) == canonical_body({"b": 2, "a": 1})


def test_signed_message_verifies_after_the_wire() -> None:
    msg = signed(message())
    body, sig = received(msg)
    verify_message(KEY, "job-a", 3, body, sig)
    assert sig is not None and sig.startswith("v1:")


def test_signature_is_deterministic() -> None:
    assert signed(message()).sig == signed(message()).sig


@pytest.mark.parametrize("sig", [None, ""])
def test_unsigned_message_refused(sig: str | None) -> None:
    body, _ = received(message())
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-a", 3, body, sig)
    assert err.value.reason == UNSIGNED
    assert isinstance(err.value, BatchfleetError)


def test_message_signed_with_another_key_is_forged() -> None:
    body, sig = received(signed(message(), key=OTHER_KEY))
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-a", 3, body, sig)
    assert err.value.reason == FORGED


def test_tampered_items_are_forged() -> None:
    msg = signed(message())
    evil = msg.model_copy(update={"items": [Item(uri="s3://evil/x.csv", name="x.csv")]})
    body, sig = received(evil)
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-a", 3, body, sig)
    assert err.value.reason == FORGED


def test_changed_batch_id_is_forged() -> None:
    msg = signed(message(batch_id=3))
    body, sig = received(msg.model_copy(update={"batch_id": 4}))
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-a", 4, body, sig)
    assert err.value.reason == FORGED


def planned_line(msg: BatchMessage, key: bytes = KEY) -> bytes:
    """A batch as the planner puts it on the wire: the canonical text, its signature pasted in last."""
    body = canonical_body(msg.model_dump(exclude={"sig"}, exclude_none=True))
    return body[:-1] + b',"sig":"' + sign_message(key, msg.job_id, msg.batch_id, body).encode() + b'"}'


def test_a_planned_line_verifies_as_sent_without_dumping_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    line = planned_line(message())
    parsed = BatchMessage.model_validate_json(line)
    monkeypatch.setattr("common.signing._signed_body", lambda m: pytest.fail("the model was dumped again"))
    verify_batch(KEY, "job-a", parsed, line)


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"in/1.csv", b"in/9.csv"), (b'"batch_id":3', b'"batch_id":4')],
)
def test_a_changed_byte_before_the_signature_is_forged(old: bytes, new: bytes) -> None:
    line = planned_line(message()).replace(old, new, 1)
    parsed = BatchMessage.model_validate_json(line)
    with pytest.raises(SignatureError) as err:
        verify_batch(KEY, "job-a", parsed, line)
    assert err.value.reason == FORGED


def test_a_body_in_another_form_falls_back_to_the_canonical_check() -> None:
    msg = sign_batch(KEY, message())
    wire = msg.model_dump_json(indent=1).encode()  # other spacing and order: not the planner's text
    verify_batch(KEY, "job-a", BatchMessage.model_validate_json(wire), wire)
    with pytest.raises(SignatureError) as err:
        verify_batch(KEY, "job-b", BatchMessage.model_validate_json(wire), wire)
    assert err.value.reason == OTHER_JOB


def test_a_planned_line_replayed_to_another_job_is_refused() -> None:
    line = planned_line(message(job_id="job-a"))
    with pytest.raises(SignatureError) as err:
        verify_batch(KEY, "job-b", BatchMessage.model_validate_json(line), line)
    assert err.value.reason == OTHER_JOB


def test_message_replayed_to_another_job_is_refused() -> None:
    body, sig = received(signed(message(job_id="job-a")))
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-b", 3, body, sig)
    assert err.value.reason == OTHER_JOB
    assert "job-a" in err.value.line() and "job-b" in err.value.line()


def test_message_replayed_as_another_batch_is_refused() -> None:
    body, sig = received(signed(message(batch_id=3)))
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-a", 9, body, sig)
    assert err.value.reason == OTHER_JOB


def test_rewritten_job_id_is_forged() -> None:
    """Editing the job id inside the body breaks the signature."""
    body, sig = received(signed(message(job_id="job-a")).model_copy(update={"job_id": "job-b"}))
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-b", 3, body, sig)
    assert err.value.reason == FORGED


@pytest.mark.parametrize("sig", ["v1:" + "0" * 64, "garbage", "v1:ünïcode", "\ud800"])
def test_garbage_signatures_are_forged(sig: str) -> None:
    body, _ = received(message())
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-a", 3, body, sig)
    assert err.value.reason == FORGED
    assert "\n" not in err.value.line()


def test_job_and_batch_binding_cannot_be_shifted() -> None:
    """Length framing: ('ab', 1) and ('a', 'b1')-like splits never share a signature."""
    body = b"{}"
    assert sign_message(KEY, "job-1", 23, body) != sign_message(KEY, "job-12", 3, body)


def test_errors_never_show_the_key() -> None:
    body, _ = received(message())
    with pytest.raises(SignatureError) as err:
        verify_message(KEY, "job-a", 3, body, "v1:00")
    assert KEY.decode() not in err.value.line()


# ---------------------------------------------------------------- snapshots


def make_code(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "score.py").write_text("def run(b):\n    return b\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    (root / "pkg" / "data.bin").write_bytes(bytes(range(256)))
    return root


def test_digest_is_stable_and_hex(tmp_path: Path) -> None:
    code = make_code(tmp_path / "code")
    digest = snapshot_digest(code)
    assert digest == snapshot_digest(code)
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_digest_ignores_bytecode(tmp_path: Path) -> None:
    code = make_code(tmp_path / "code")
    before = snapshot_digest(code)
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"\x00junk")
    (code / "pkg" / "old.pyc").write_bytes(b"junk")
    assert snapshot_digest(code) == before


def test_digest_same_for_same_tree_elsewhere(tmp_path: Path) -> None:
    assert snapshot_digest(make_code(tmp_path / "a")) == snapshot_digest(make_code(tmp_path / "b"))


@pytest.mark.parametrize(
    "change",
    [
        lambda c: (c / "score.py").write_text("def run(b):\n    return []\n"),
        lambda c: (c / "pkg" / "util.py").rename(c / "pkg" / "util2.py"),
        lambda c: (c / "extra.py").write_text(""),
        lambda c: (c / "pkg" / "data.bin").unlink(),
        lambda c: (c / "pkg" / "sub").mkdir() or (c / "pkg" / "util.py").rename(c / "pkg" / "sub" / "util.py"),
    ],
    ids=["content", "rename", "added", "removed", "moved"],
)
def test_digest_changes_with_the_code(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    code = make_code(tmp_path / "code")
    before = snapshot_digest(code)
    change(code)
    assert snapshot_digest(code) != before


def test_digest_path_and_content_boundaries(tmp_path: Path) -> None:
    """A byte moved from a file name into its content changes the digest."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "xy").write_bytes(b"z")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_bytes(b"yz")
    assert snapshot_digest(tmp_path / "a") != snapshot_digest(tmp_path / "b")


@pytest.mark.skipif(os.name != "posix", reason="symlinks need privileges on Windows")
def test_digest_survives_symlink_loop(tmp_path: Path) -> None:
    code = make_code(tmp_path / "code")
    (code / "pkg" / "loop").symlink_to(code, target_is_directory=True)
    assert len(snapshot_digest(code)) == 64


def test_digest_of_missing_folder_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        snapshot_digest(tmp_path / "missing")


def test_snapshot_signature_roundtrip(tmp_path: Path) -> None:
    digest = snapshot_digest(make_code(tmp_path / "code"))
    verify_snapshot(KEY, "job-a", digest, sign_snapshot(KEY, "job-a", digest))


@pytest.mark.parametrize(
    ("job", "digest_change", "key", "reason"),
    [
        ("job-b", False, KEY, FORGED),
        ("job-a", True, KEY, FORGED),
        ("job-a", False, OTHER_KEY, FORGED),
    ],
    ids=["other-job", "changed-code", "other-key"],
)
def test_snapshot_signature_failures(tmp_path: Path, job: str, digest_change: bool, key: bytes, reason: str) -> None:
    code = make_code(tmp_path / "code")
    sig = sign_snapshot(key, "job-a", snapshot_digest(code))
    if digest_change:
        (code / "score.py").write_text("import os; os.system('evil')\n")
    with pytest.raises(SignatureError) as err:
        verify_snapshot(KEY, job, snapshot_digest(code), sig)
    assert err.value.reason == reason


def test_unsigned_snapshot_refused() -> None:
    with pytest.raises(SignatureError) as err:
        verify_snapshot(KEY, "job-a", "0" * 64, None)
    assert err.value.reason == UNSIGNED


def test_message_signature_is_not_a_snapshot_signature() -> None:
    digest = "ab" * 32
    body = digest.encode()
    with pytest.raises(SignatureError):
        verify_snapshot(KEY, "job-a", digest, sign_message(KEY, "job-a", 0, body))


@pytest.mark.parametrize("code_uri", ["/srv/code", "s3://bucket/store/_code/abc"])
def test_a_job_without_a_code_hash_needs_the_key_and_stored_code_needs_its_hash(tmp_path: Path, code_uri: str) -> None:
    """Anyone may write a job file: without the key's signature nothing is served, and code from a
    store is served only as a snapshot under its hash (a local folder runs in place)."""
    from common.signing import check_job_signature, sign_job
    from tests.runtime_helpers import make_job

    key = b"k" * 32
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data").model_copy(
        update={"code_uri": code_uri, "code_hash": None}
    )
    with pytest.raises(BatchfleetError):
        check_job_signature(job, key)  # unsigned (a forged job file)
    with pytest.raises(BatchfleetError):
        check_job_signature(sign_job(b"x" * 32, job), key)  # signed with another key
    signed = sign_job(key, job)
    if code_uri.startswith("s3://"):
        with pytest.raises(BatchfleetError):
            check_job_signature(signed, key)
    else:
        check_job_signature(signed, key)


def test_a_message_signature_is_the_mac_of_its_framed_parts() -> None:
    """Hashing the job's prefix once per job signs exactly what the framed message would."""
    body = b'{"batch_id":7}'
    framed = _frame(b"batchfleet/message/v1", b"job-a", b"7", body)
    assert sign_message(KEY, "job-a", 7, body) == _mac(KEY, framed)
    assert sign_message(KEY, "job-b", 7, body) != _mac(KEY, framed)
