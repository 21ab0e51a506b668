"""Refuse unsigned or forged work when the fleet has a signing key."""

from __future__ import annotations

import hashlib
from typing import Any

from common.messages import BatchMessage, JobConfig
from common.signing import (
    SignatureError,
    canonical_body,
    sign_message,
    sign_snapshot,
    verify_message,
    verify_snapshot,
)


def job_digest(job: JobConfig) -> str:
    """What a job's signature covers: the whole resolved job (code hash, args, settings)."""
    return hashlib.sha256(canonical_body(job.model_dump(mode="json", exclude={"code_sig"}))).hexdigest()


def sign_job(key: bytes, job: JobConfig) -> JobConfig:
    return job.model_copy(update={"code_sig": sign_snapshot(key, job.job_id, job_digest(job))})


def check_job_signature(job: JobConfig, key: bytes | None) -> None:
    """With a key, the job file must be signed by it (its code hash is part of what is signed)."""
    if key is None:
        return
    if not job.code_hash:
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


def verify_batch(key: bytes, job_id: str, message: BatchMessage) -> None:
    """Raise SignatureError unless the message was signed for this job and batch."""
    verify_message(key, job_id, message.batch_id, _signed_body(message), message.sig)
