"""Fetch a job's code snapshot and refuse it unless its hash (and signature) match."""

from __future__ import annotations

import logging
from pathlib import Path

from common.errors import BatchfleetError
from common.messages import JobConfig
from common.safepath import safe_join
from common.signing import snapshot_digest
from common.storage import StorageOptions, is_remote, open_storage

log = logging.getLogger(__name__)


class SnapshotError(BatchfleetError):
    """The code a job would run is not the code it was submitted with."""


def fetch_code(job: JobConfig, code_dir: Path, options: StorageOptions) -> None:
    """Download the snapshot (fleet) into code_dir, then check its digest."""
    if is_remote(job.code_uri):
        storage = open_storage(job.code_uri, options)
        code_dir.mkdir(parents=True, exist_ok=True)
        for info in storage.list(job.code_uri):
            storage.download(info.uri, safe_join(code_dir, info.rel))
    if not job.code_hash:
        return
    digest = snapshot_digest(code_dir)
    if digest != job.code_hash:
        raise SnapshotError(
            f"code snapshot of job {job.job_id} does not match its hash "
            f"(expected {job.code_hash[:12]}, found {digest[:12]}); refusing to run it",
            "resubmit the job; the stored snapshot was changed after submission",
        )
