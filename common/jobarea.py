"""A job's area in the store: the one place that names its files and folders.

    <store>/<job id>/
      job.json            the resolved (and signed) job, written once at submission
      plan.jsonl          one planned batch per line
      published           marker: every planned batch is on the queue
      parts/<node>/       committed frames (common/parts/frames.py)
      failed/<batch>.json batches that failed for good, recorded by the coordinator
      state.json          live state for `status` and `list`
      cancel.json         a cancel request, polled by the coordinator
      ended               marker: the job ended; no worker serves it again (until `resume` clears it)

    <store>/_code/<hash>/     code snapshots, one per content hash, shared by every job (fleet mode)
    <store>/_code/<hash>.done the snapshot is complete (its manifest: "<size> <path>" per line)

Plain functions over strings, no pydantic: a worker's child process imports this.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.storage.base import join_uri

JOB_FILE = "job.json"
STATE_FILE = "state.json"
CANCEL_FILE = "cancel.json"
PLAN_FILE = "plan.jsonl"
PUBLISHED_MARKER = "published"
ENDED_MARKER = "ended"
PARTS = "parts"
FAILED = "failed"
CODE_ROOT = "_code"


@dataclass(frozen=True)
class JobArea:
    """The URIs of one job's area; `root` is `<store>/<job id>` (JobConfig.store_uri)."""

    root: str

    @classmethod
    def of(cls, store_uri: str, job_id: str) -> JobArea:
        return cls(join_uri(store_uri, job_id))

    @property
    def job_file(self) -> str:
        return join_uri(self.root, JOB_FILE)

    @property
    def state(self) -> str:
        return join_uri(self.root, STATE_FILE)

    @property
    def cancel(self) -> str:
        return join_uri(self.root, CANCEL_FILE)

    @property
    def plan(self) -> str:
        return join_uri(self.root, PLAN_FILE)

    @property
    def published(self) -> str:
        return join_uri(self.root, PUBLISHED_MARKER)

    @property
    def ended(self) -> str:
        return join_uri(self.root, ENDED_MARKER)

    @property
    def parts(self) -> str:
        return join_uri(self.root, PARTS)

    def node_parts(self, node_id: str) -> str:
        return join_uri(self.root, PARTS, node_id)

    @property
    def failed(self) -> str:
        return join_uri(self.root, FAILED)

    def failed_record(self, batch_id: int) -> str:
        return join_uri(self.root, FAILED, f"{batch_id:09d}.json")


def code_snapshot(store_root: str, digest: str) -> str:
    """Where the snapshot with this content hash lives: every job with the same code shares it."""
    return join_uri(store_root, CODE_ROOT, digest)


def code_snapshot_marker(store_root: str, digest: str) -> str:
    return join_uri(store_root, CODE_ROOT, f"{digest}.done")
