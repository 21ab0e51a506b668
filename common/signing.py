"""HMAC-SHA256 signatures for batch messages and code snapshots.

Anyone who can publish to the queue must not be able to make the fleet run their code: the
coordinator signs every message and the code snapshot with a key shared by the fleet, and
workers refuse what does not verify. Each signature binds the job id (and, for messages, the
batch id), so a valid message replayed into another job fails.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from common.errors import BatchfleetError, UsageError
from common.messages import BatchMessage, JobConfig
from common.storage.base import is_remote

KEY_ENV = "BATCHFLEET_SIGNING_KEY"
KEY_FILE_ENV = "BATCHFLEET_SIGNING_KEY_FILE"
MIN_KEY_BYTES = 16
SIG_PREFIX = "v1:"

UNSIGNED = "unsigned"
FORGED = "forged"
OTHER_JOB = "signed for another job"

# Domain tags keep a message signature from ever verifying as a snapshot signature.
_MESSAGE_TAG = b"batchfleet/message/v1"
_SNAPSHOT_TAG = b"batchfleet/snapshot/v1"
SNAPSHOT_SKIP_DIRS = frozenset({"__pycache__"})
SNAPSHOT_SKIP_SUFFIXES = (".pyc",)
_CHUNK = 1024 * 1024

log = logging.getLogger(__name__)


class SignatureError(BatchfleetError):
    """A message or snapshot failed verification; `reason` is the short dead-letter reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_key(key_file: Path | None, env: Mapping[str, str]) -> bytes | None:
    """The signing key from `key_file`, else $BATCHFLEET_SIGNING_KEY_FILE, else $BATCHFLEET_SIGNING_KEY.

    None when no key is configured. The key is never taken from a command-line value: those
    are visible to every user on the machine through the process list.
    """
    if key_file is None:
        from_env = env.get(KEY_FILE_ENV, "").strip()
        inline = env.get(KEY_ENV, "")
        if from_env and inline:
            raise UsageError(
                f"both {KEY_ENV} and {KEY_FILE_ENV} are set",
                f"set only one; {KEY_FILE_ENV} is preferred",
            )
        if not from_env:
            return _check_length(inline.strip().encode(), f"${KEY_ENV}") if inline else None
        key_file = Path(from_env)
    return _check_length(_read_key_file(key_file), f"signing key file {key_file}")


def _read_key_file(path: Path) -> bytes:
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"signing key file {path} does not exist", "create it or fix the path") from None
    except OSError as exc:
        raise UsageError(
            f"cannot read signing key file {path}: {exc.strerror or exc}",
            "make it readable by the user running batchfleet",
        ) from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "signing key file %s is accessible to group or others (mode %o); run: chmod 600 %s",
            path,
            stat.S_IMODE(info.st_mode),
            path,
        )
    # Editors and `echo` add a trailing newline; it is not part of the key.
    return data.strip()


def _check_length(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(
            f"{source} holds a signing key of {len(key)} bytes; at least {MIN_KEY_BYTES} are needed",
            "generate one with: head -c 32 /dev/urandom | base64",
        )
    return key


def _frame(*parts: bytes) -> bytes:
    """Length-prefix each part so no two different part lists give the same bytes."""
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def _mac(key: bytes, payload: bytes) -> str:
    return SIG_PREFIX + hmac.new(key, payload, hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    # compare_digest refuses non-ASCII str, and `given` comes off the wire: compare bytes.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def canonical_body(message_dict: Mapping[str, Any]) -> bytes:
    """The message as signed: JSON without `sig`, sorted keys, compact separators."""
    body = {k: v for k, v in message_dict.items() if k != "sig"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii")


def sign_message(key: bytes, job_id: str, batch_id: int, body_without_sig: bytes) -> str:
    """Signature over the canonical body, bound to this job id and batch id."""
    # The MAC of _frame(tag, job id, batch id, body), its job's prefix hashed once per job.
    mac = _job_mac(key, job_id).copy()
    mac.update(_frame(str(batch_id).encode()) + len(body_without_sig).to_bytes(8, "big"))
    mac.update(body_without_sig)
    return SIG_PREFIX + mac.hexdigest()


@functools.lru_cache(maxsize=16)
def _job_mac(key: bytes, job_id: str) -> hmac.HMAC:
    """The message MAC's state after its tag and the job id (a plan signs a million messages)."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(_frame(_MESSAGE_TAG, job_id.encode()))
    return mac


def verify_message(key: bytes, job_id: str, batch_id: int, body: bytes, sig: str | None) -> None:
    """Raise SignatureError unless `sig` signs `body` for this job id and batch id.

    Pass the job the worker is serving (from its queue or job.json), not only the ids read
    from the body: a message copied into another job's queue then fails as "signed for
    another job".
    """
    where = f"batch {batch_id} of job {job_id}"
    if not sig:
        raise SignatureError(UNSIGNED, f"{where} is unsigned; only messages signed by the coordinator run")
    if _same(sign_message(key, job_id, batch_id, body), sig):
        return
    claimed = _claimed_ids(body)
    if claimed is not None and claimed != (job_id, batch_id):
        if _same(sign_message(key, claimed[0], claimed[1], body), sig):
            raise SignatureError(
                OTHER_JOB, f"{where} carries a message signed for batch {claimed[1]} of job {claimed[0]}"
            )
    raise SignatureError(FORGED, f"{where} is forged: its signature does not match the fleet's signing key")


def _claimed_ids(body: bytes) -> tuple[str, int] | None:
    """The job and batch ids the body names, when it names them."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    job, batch = data.get("job_id"), data.get("batch_id")
    if isinstance(job, str) and isinstance(batch, int) and not isinstance(batch, bool):
        return job, batch
    return None


def snapshot_digest(folder: Path, files: Iterable[tuple[str, Path]] | None = None) -> str:
    """sha256 over the folder's files: sorted relative POSIX paths and their contents.

    `files` is the snapshot's selection (ignore files applied); without it, every file in the
    folder counts, which is what a node checks after downloading a snapshot. Byte-compiled files
    (__pycache__, *.pyc) are skipped: Python writes them on import, so they differ between the
    machine that snapshots and the ones that run.
    """
    if not folder.is_dir():
        raise UsageError(f"code folder {folder} does not exist or is not a folder")
    outer = hashlib.sha256(_SNAPSHOT_TAG)
    for rel, path in sorted(_snapshot_files(folder) if files is None else files):
        outer.update(_frame(rel.encode("utf-8"), _file_sha256(path)))
    return outer.hexdigest()


def _snapshot_files(folder: Path) -> Iterator[tuple[str, Path]]:
    seen: set[str] = set()
    # Directory symlinks are followed (an upload copies their contents); `seen` stops loops.
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if d not in SNAPSHOT_SKIP_DIRS]
        for name in files:
            if name.endswith(SNAPSHOT_SKIP_SUFFIXES):
                continue
            path = Path(current, name)
            yield path.relative_to(folder).as_posix(), path


def _file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.digest()


def sign_snapshot(key: bytes, job_id: str, digest: str) -> str:
    """Signature over a snapshot digest, bound to the job id."""
    return _mac(key, _frame(_SNAPSHOT_TAG, job_id.encode(), digest.encode()))


def verify_snapshot(key: bytes, job_id: str, digest: str, sig: str | None) -> None:
    """Raise SignatureError unless `sig` signs `digest` for this job."""
    if not sig:
        raise SignatureError(
            UNSIGNED,
            f"code snapshot of job {job_id} is unsigned; only snapshots signed by the coordinator run",
        )
    if not _same(sign_snapshot(key, job_id, digest), sig):
        raise SignatureError(
            FORGED,
            f"code snapshot of job {job_id} fails its signature check: it was changed, "
            "or signed with another key or for another job",
        )


# Jobs and planned batches
def job_digest(job: JobConfig) -> str:
    """What a job's signature covers: the whole resolved job (code hash, args, settings)."""
    return hashlib.sha256(canonical_body(job.model_dump(mode="json", exclude={"code_sig"}))).hexdigest()


def sign_job(key: bytes, job: JobConfig) -> JobConfig:
    return job.model_copy(update={"code_sig": sign_snapshot(key, job.job_id, job_digest(job))})


def check_job_signature(job: JobConfig, key: bytes | None) -> None:
    """With a key, the job file must be signed by it (its code hash is part of what is signed)."""
    if key is None:
        return
    if not job.code_hash and is_remote(job.code_uri):
        # Stored code must be a snapshot under its hash; a local code folder (embedded mode, or a
        # shared folder) runs in place and the signature still covers its path and the whole job.
        raise SignatureError("unsigned", f"job {job.job_id} has no code snapshot hash; it was not submitted signed")
    verify_snapshot(key, job.job_id, job_digest(job), job.code_sig)


def _signed_body(message: BatchMessage) -> bytes:
    # None fields are left out, so a plan line built as a plain dict signs the same body.
    return canonical_body(message.model_dump(mode="json", exclude={"sig"}, exclude_none=True))


def sign_batch(key: bytes, message: BatchMessage) -> BatchMessage:
    body = _signed_body(message)
    return message.model_copy(update={"sig": sign_message(key, message.job_id, message.batch_id, body)})


def sign_planned(key: bytes, message: dict[str, Any]) -> None:
    """Sign a planned batch in wire form (no None values), in place."""
    message["sig"] = sign_message(key, message["job_id"], message["batch_id"], canonical_body(message))


def verify_batch(key: bytes, job_id: str, message: BatchMessage, body: bytes | None = None) -> None:
    """Raise SignatureError unless the message was signed for this job and batch.

    With the wire `body` the message was parsed from, a body in the planner's form (its canonical
    text with the signature pasted in last) is checked as it is, without dumping the model again.
    """
    if body is not None and message.sig and _signed_as_sent(key, job_id, message.batch_id, body, message.sig):
        return
    verify_message(key, job_id, message.batch_id, _signed_body(message), message.sig)


def _signed_as_sent(key: bytes, job_id: str, batch_id: int, body: bytes, sig: str) -> bool:
    """Whether `body` is a signed text followed by its own `sig`: the message parsed from it is then
    the signed one plus `sig`, so the signature covers what runs."""
    suffix = b',"sig":"' + sig.encode("ascii", "replace") + b'"}'
    if not body.endswith(suffix):
        return False
    return _same(sign_message(key, job_id, batch_id, body[: -len(suffix)] + b"}"), sig)


# What nodes and coordinators say to each other: announcements, reports, the tries header
_ANNOUNCE_TAG = b"batchfleet/announcement/v1"
_SUBMIT_TAG = b"batchfleet/submission/v1"
_REPORT_TAG = b"batchfleet/report/v1"
_TRIES_TAG = b"batchfleet/prior-tries/v1"
_REPLY_TAG = b"batchfleet/submit-reply/v1"
SEALED = b"S"  # a signed reports-queue message: this tag, the signature, a space, then the body
_SEAL_LEN = len(SIG_PREFIX) + 64


def sign_announcement(
    key: bytes,
    job_id: str,
    job_uri: str,
    state: str,
    submission: bool = False,
    refused: tuple[str, str, str] = ("", "", ""),
) -> str:
    """Signature over an announcement (or, with `submission`, a job handed to the coordinator service):
    the two never verify as each other, so a captured announcement cannot start a second coordinator.
    A "refused" announcement also signs whom it refuses and why (`refused`: node id, session, detail),
    so a captured one cannot be turned against another node."""
    tag = _SUBMIT_TAG if submission else _ANNOUNCE_TAG
    parts = [tag, job_id.encode(), job_uri.encode(), state.encode()]
    if any(refused):  # only then: the other announcements' signatures stay as they were
        parts += [field.encode() for field in refused]
    return _mac(key, _frame(*parts))


def verify_announcement(
    key: bytes,
    job_id: str,
    job_uri: str,
    state: str,
    sig: str | None,
    submission: bool = False,
    refused: tuple[str, str, str] = ("", "", ""),
) -> None:
    what = "submission" if submission else f"{state} announcement"
    if not sig:
        raise SignatureError(UNSIGNED, f"the {what} of job {job_id} is unsigned")
    if not _same(sign_announcement(key, job_id, job_uri, state, submission, refused), sig):
        raise SignatureError(FORGED, f"the {what} of job {job_id} is forged: its signature does not match")


def seal_report(key: bytes, job_id: str, body: bytes) -> bytes:
    """A reports-queue message (a report, an event or a bundle) signed for its job."""
    return SEALED + _mac(key, _frame(_REPORT_TAG, job_id.encode(), body)).encode() + b" " + body


def open_report(key: bytes, job_id: str, message: bytes) -> bytes:
    """The body of a sealed reports-queue message; SignatureError unless sealed for this job."""
    if message[:1] != SEALED or message[1 + _SEAL_LEN : 2 + _SEAL_LEN] != b" ":
        raise SignatureError(UNSIGNED, f"a report on job {job_id}'s queue is unsigned")
    sig, body = message[1 : 1 + _SEAL_LEN].decode("ascii", "replace"), message[2 + _SEAL_LEN :]
    if not _same(_mac(key, _frame(_REPORT_TAG, job_id.encode(), body)), sig):
        raise SignatureError(FORGED, f"a report on job {job_id}'s queue is forged, or signed for another job")
    return body


def unsealed(message: bytes) -> bytes:
    """The body of a reports-queue message whether sealed or not (to name the sender of a dropped one)."""
    if message[:1] == SEALED and message[1 + _SEAL_LEN : 2 + _SEAL_LEN] == b" ":
        return message[2 + _SEAL_LEN :]
    return message


def sign_tries(key: bytes, body: bytes, tries: int) -> str:
    """Signature over the tries a handed-back copy of a batch carries (its body is the batch's own,
    itself signed for its job and batch)."""
    return _mac(key, _frame(_TRIES_TAG, body, str(tries).encode()))


def verify_tries(key: bytes, body: bytes, tries: int, sig: object) -> None:
    if not isinstance(sig, str | bytes) or not sig:
        raise SignatureError(UNSIGNED, "its x-batchfleet-prior-tries header is unsigned")
    given = sig if isinstance(sig, str) else sig.decode("utf-8", "replace")
    if not _same(sign_tries(key, body, tries), given):
        raise SignatureError(FORGED, "its x-batchfleet-prior-tries header is forged")


def sign_reply(key: bytes, job_id: str, accepted: bool, reason: str, coordinator: str) -> str:
    """Signature over the coordinator service's answer to a submission."""
    return _mac(
        key, _frame(_REPLY_TAG, job_id.encode(), b"1" if accepted else b"0", reason.encode(), coordinator.encode())
    )


def verify_reply(key: bytes, job_id: str, accepted: bool, reason: str, coordinator: str, sig: str | None) -> None:
    if not sig:
        raise SignatureError(UNSIGNED, f"the answer about job {job_id} is unsigned")
    if not _same(sign_reply(key, job_id, accepted, reason, coordinator), sig):
        raise SignatureError(FORGED, f"the answer about job {job_id} is forged: its signature does not match")
