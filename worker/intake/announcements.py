"""Which announced jobs a node believes, and where it may read them from.

Anyone who can publish can announce: an announcement counts only when signed with the fleet's
key (when the node has one), its job file lies in a store this node serves, names the job
announced, keeps its code in such a store too, and the job has not ended.
"""

from __future__ import annotations

from pydantic import ValidationError

from common.errors import BatchfleetError
from common.jobarea import JobArea
from common.messages import JobAnnouncement, JobConfig
from common.rejections import Rejections
from common.signing import SignatureError, verify_announcement
from common.storage import StorageOptions, is_remote, open_storage, uri_within


class JobRefused(BatchfleetError):
    """An announced job this node will not serve (outside its stores, mismatched, or ended)."""


def read_announcement(body: bytes, key: bytes | None, rejections: Rejections) -> JobAnnouncement | None:
    """The announcement, or None when it is unreadable or not signed with the fleet's key."""
    try:
        announcement = JobAnnouncement.model_validate_json(body)
    except ValidationError as exc:
        rejections.drop("unreadable announcement", "an unknown sender", str(exc.errors()[0]["msg"]))
        return None
    if key is not None:
        a = announcement
        try:
            refused = (a.node_id or "", a.session or "", a.detail)
            verify_announcement(key, a.job_id, a.job_uri, a.state, a.sig, refused=refused)
        except SignatureError as exc:
            rejections.drop(f"{exc.reason} announcement", "an unknown sender", exc.line())
            return None
    return announcement


def load_job(announcement: JobAnnouncement, roots: tuple[str, ...], options: StorageOptions) -> JobConfig:
    """The announced job's file, read only from an allowed store; raises JobRefused or BatchfleetError."""
    uri = announcement.job_uri
    allowed = ", ".join(roots) or "none"
    if not any(uri_within(uri, root) for root in roots):
        raise JobRefused(
            f"job file {uri} is outside the stores this node serves ({allowed})", "start the worker with --store-allow"
        )
    storage = open_storage(uri, options)
    try:
        job = JobConfig.model_validate_json(storage.read_bytes(uri))
    except ValidationError as exc:
        raise BatchfleetError(f"job file {uri} is not valid: {exc.errors()[0]['msg']}") from exc
    if job.job_id != announcement.job_id:
        raise JobRefused(f"job file {uri} holds job {job.job_id}, not the announced {announcement.job_id}")
    if not uri_within(uri, job.store_uri):
        raise JobRefused(f"job file {uri} is not in the area of its job ({job.store_uri})")
    if not any(uri_within(job.code_uri, root) for root in roots):
        raise JobRefused(f"the code of job {job.job_id} ({job.code_uri}) is outside the stores this node serves")
    if is_remote(job.code_uri) and not job.code_hash:
        # Only a local folder runs in place; stored code is a snapshot checked against its hash.
        raise JobRefused(f"the code of job {job.job_id} ({job.code_uri}) is stored without a snapshot hash")
    ended = JobArea(job.store_uri).ended
    if open_storage(ended, options).exists(ended):
        raise JobRefused(f"job {job.job_id} has ended; it is not served again")
    return job


def has_ended(job: JobConfig, options: StorageOptions) -> bool:
    """The job's area holds its ended marker (written before the coordinator announces "ended").
    A store that does not answer proves nothing either way: the announcement is believed."""
    ended = JobArea(job.store_uri).ended
    try:
        return open_storage(ended, options).exists(ended)
    except BatchfleetError:
        return True
