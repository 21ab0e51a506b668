"""Wire and store models: versioned JSON, strict at every boundary."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.settings import RunSettings

WIRE_VERSION: Final = 1


class Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


class InputBinding(Strict):
    """One bound input: where it is and how workers consume it."""

    name: str
    uri: str = Field(description="Absolute local path or s3://bucket/prefix.")
    kind: Literal["files", "tabular", "value"] = "files"
    mode: Literal["download", "direct"] = "download"


class PythonEnvironment(Strict):
    """A job's Python environment, read from the spec at submission: what each worker builds."""

    requirements: list[str] = Field(default_factory=list, description="pip requirement lines.")
    python: str | None = Field(default=None, description="The spec's python pin, e.g. '=3.11' or '>=3.10'.")
    conda_only: list[str] = Field(default_factory=list, description="conda packages, which no worker installs.")
    image: str | None = Field(default=None, description="The docker image named; recorded, not used.")
    source: str = Field(default="", description="Where it was read from, for messages.")
    missing: list[str] = Field(default_factory=list, description="Environment files the spec names that do not exist.")

    def notes(self) -> list[str]:
        """One line for each thing in the spec that no worker provides."""
        lines = [f"environment file {path} does not exist" for path in self.missing]
        lines += [f"conda package {p!r} is not installed (workers have no conda): list it under pip:"
                  for p in self.conda_only]  # fmt: skip
        if self.image:
            lines.append(f"docker image {self.image} is recorded, not used: workers run without containers")
        return lines


class JobConfig(Strict):
    """The resolved job, written to <store>/<job_id>/job.json; workers read only this."""

    v: Literal[1] = WIRE_VERSION
    job_id: str
    name: str
    created_at: float
    code_uri: str = Field(description="Folder holding the entry script (a snapshot in fleet mode).")
    code_hash: str = ""
    entry_script: str = Field(description="Entry script path relative to code_uri.")
    args: list[str] = Field(default_factory=list, description="Resolved program arguments.")
    inputs: dict[str, InputBinding] = Field(default_factory=dict)
    input_data: list[str] = Field(default_factory=list, description="Names of the mini-batched inputs.")
    outputs: dict[str, str] = Field(default_factory=dict, description="Output name -> location URI.")
    output_data: str | None = None
    output_uri: str = Field(description="Where the merged file and logs/ go.")
    store_uri: str = Field(description="The job's area: <store>/<job_id>.")
    settings: RunSettings
    environment: dict[str, Any] | None = None
    python_env: PythonEnvironment | None = Field(
        default=None, description="The environment workers build; None: children run in the worker's Python."
    )
    environment_variables: dict[str, str] = Field(default_factory=dict)
    code_sig: str | None = Field(default=None, description="HMAC of the snapshot digest, when jobs are signed.")
    batches_per_message: int = Field(
        default=1, ge=1, le=64, description="Mini-batches carried per broker message (see common/broker/packs.py)."
    )


class Item(Strict):
    """One unit of work: a file, or a row range of a table."""

    uri: str
    name: str = Field(description="Path relative to its input root, used for local names.")
    size: int | None = None
    fmt: Literal["csv", "parquet", "jsonl"] | None = None
    offset: int | None = Field(default=None, description="First byte (CSV / JSON Lines) of the range.")
    length: int | None = Field(default=None, description="Bytes in the range.")
    row_groups: list[int] | None = None
    rows: int | None = None


class BatchMessage(Strict):
    """One mini-batch: references to items, never the data."""

    v: Literal[1] = WIRE_VERSION
    job_id: str
    batch_id: int = Field(ge=0, description="Mini-batch index; merge order.")
    input: str = Field(default="", description="Name of the input the items come from.")
    items: list[Item]
    partition: dict[str, str] | None = None
    sig: str | None = None


Outcome = Literal["committed", "retry", "failed"]


class BatchResult(Strict):
    """What a worker reports after one try at a batch."""

    v: Literal[1] = WIRE_VERSION
    job_id: str
    batch_id: int
    node_id: str
    process: str = ""
    attempt: int = Field(ge=1, description="1-based try number.")
    outcome: Outcome
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    started: float = 0.0
    seconds: float = 0.0
    download_seconds: float = 0.0
    run_seconds: float = 0.0
    commit_seconds: float = 0.0
    part: str | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None


class JobAnnouncement(Strict):
    """Fanned out to every worker: a job to serve, or one that ended.

    "preparing" comes while the plan is still being published: a worker starts its processes
    (and init()) but takes no message before "active". "refused" tells one node (`node_id` and
    `session`) that another live node already serves the job under its id (`detail` names both).
    """

    v: Literal[1] = WIRE_VERSION
    # It names folders and queues: no separators, no '..' (anyone can publish an announcement).
    job_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
    job_uri: str = Field(description="URI of the job's job.json in the store.")
    state: Literal["preparing", "active", "ended", "refused"]
    node_id: str | None = None
    session: str | None = None
    detail: str = ""
    sig: str | None = Field(default=None, description="HMAC with the fleet's key (common/signing.py).")


class NodeHello(Strict):
    """A starting worker greets the coordinators (topic "hello"): each answers with its jobs' announcements
    at once, so the worker need not wait for the next periodic one."""

    v: Literal[1] = WIRE_VERSION
    node_id: str
    session: str = ""
    host: str = ""


REPLY_QUEUE_PATTERN = r"^bf\.reply\.[0-9a-f]{32}$"  # Broker.declare_reply_queue's names, and no other queue


class JobSubmission(JobAnnouncement):
    """A job handed to the coordinator service (`batchfleet submit`): its job.json is in the store.

    With `reply_to`, the service answers there (SubmitReply) once it has read the job, or refused it.
    """

    reply_to: str | None = Field(default=None, pattern=REPLY_QUEUE_PATTERN)


class SubmitReply(Strict):
    """The coordinator service's answer to a submission: it has the job, or why not (one line)."""

    v: Literal[1] = WIRE_VERSION
    job_id: str
    accepted: bool
    reason: str = Field(default="", description="Why it was refused, or how it stands (running, queued).")
    coordinator: str = Field(default="", description="The answering coordinator: host and pid.")
    sig: str | None = None


EventKind = Literal["init_failed", "refused", "environment_failed", "node_started", "node_stopped", "heartbeat"]


class JobEvent(Strict):
    """Node-level news the coordinator must act on (init failure, node joined/left)."""

    v: Literal[1] = WIRE_VERSION
    job_id: str
    node_id: str
    kind: EventKind
    detail: str = ""
    at: float = 0.0
    session: str = Field(default="", description="The sending node process's random token (worker/intake/identity.py).")
    host: str = Field(default="", description="Where that process runs, for messages about duplicate node ids.")


def encode_report(report: BatchResult | JobEvent) -> bytes:
    """Results-queue body: one tag byte (R or E), then the model's JSON."""
    tag = b"R" if isinstance(report, BatchResult) else b"E"
    return tag + report.model_dump_json().encode()


def decode_report(body: bytes) -> BatchResult | JobEvent:
    """Inverse of encode_report; raises pydantic.ValidationError or ValueError."""
    tag, data = body[:1], body[1:]
    if tag == b"R":
        return BatchResult.model_validate_json(data)
    if tag == b"E":
        return JobEvent.model_validate_json(data)
    raise ValueError("a report must start with R (result) or E (event)")


BUNDLE = b"B"  # a bundle: this tag, then encoded reports joined by newlines
BUNDLE_BYTES = 256 * 1024


def bundle_reports(bodies: list[bytes], limit: int = BUNDLE_BYTES) -> list[bytes]:
    """Encoded reports as few messages: a report's JSON holds no raw newline, so one separates them.
    A lone report stays as it is."""
    out: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for body in bodies:
        if b"\n" in body:  # not from encode_report; never joined
            out.append(body)
            continue
        if group and size + len(body) > limit:
            out.append(_joined(group))
            group, size = [], 0
        group.append(body)
        size += len(body) + 1
    if group:
        out.append(_joined(group))
    return out


def _joined(group: list[bytes]) -> bytes:
    return group[0] if len(group) == 1 else BUNDLE + b"\n".join(group)


def unbundle_reports(body: bytes) -> list[bytes]:
    """The encoded reports in a reports-queue message (one, or a bundle's)."""
    return body[1:].split(b"\n") if body[:1] == BUNDLE else [body]
