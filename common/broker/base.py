"""The broker interface both sides use; RabbitMQ semantics are the reference."""

from __future__ import annotations

import queue
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from common.errors import BrokerError

# "release": give back untried (a graceful stop, or more than a node should hold); costs no try
Settle = Literal["ack", "requeue", "dead", "release"]

REASON_HEADER = "x-batchfleet-reason"
PRIOR_TRIES_HEADER = "x-batchfleet-prior-tries"  # tries a handed-back copy had before it was re-published
TRIES_SIG_HEADER = "x-batchfleet-tries-sig"  # its signature (common/signing.sign_tries), when the fleet has a key
MAX_PRIOR_TRIES = 1_000_000

# Signs the tries a copy of `body` carries (set by a node that holds the fleet's key).
TriesSigner = Callable[[bytes, int], str]


def prior_tries(headers: Mapping[str, object]) -> int | None:
    """The tries a handed-back copy carries: 0 without the header, None when it is not a plausible count.
    Headers come from anyone who can publish: this never raises (see worker/intake/admit.py)."""
    value = headers.get(PRIOR_TRIES_HEADER)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIOR_TRIES:
        return None
    return value


def delivery_count(headers: Mapping[str, object]) -> int:
    """The broker's count of earlier deliveries (a quorum queue sets it, whatever a publisher sent)."""
    value = headers.get("x-delivery-count")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIOR_TRIES:
        return 0
    return value


def attempt_of(headers: Mapping[str, object], failed_deliveries: int | None = None) -> int:
    """1 + earlier deliveries + tries a handed-back copy carried (a malformed count adds none)."""
    earlier = delivery_count(headers) if failed_deliveries is None else failed_deliveries
    return 1 + earlier + (prior_tries(headers) or 0)


# Fanout topics: "announce" carries jobs to workers, "hello" a starting worker's greeting to coordinators.
Topic = Literal["announce", "hello"]
REPLY_PREFIX = "bf.reply."


class QueueNames(NamedTuple):
    batches: str
    reports: str
    dead: str


def queue_names(job_id: str) -> QueueNames:
    """Per-job queue names, shared by every broker implementation."""
    return QueueNames(f"bf.{job_id}.batches", f"bf.{job_id}.reports", f"bf.{job_id}.dead")


def job_of(queue_name: str) -> str | None:
    """The job whose queue this is (the inverse of queue_names); None for other queues."""
    for suffix in (".batches", ".reports", ".dead"):
        if queue_name.startswith("bf.") and queue_name.endswith(suffix) and len(queue_name) > 3 + len(suffix):
            return queue_name[3 : -len(suffix)]
    return None


def delivery_limit(run_max_try: int) -> int:
    """x-delivery-limit so that a batch gets exactly run_max_try deliveries."""
    return max(run_max_try - 1, 0)


@dataclass(frozen=True)
class Delivery:
    """One delivered message; settle it exactly once through its broker."""

    queue: str
    body: bytes
    attempt: int  # 1-based: 1 + the broker's count of earlier failed deliveries
    tag: object = field(compare=False)
    headers: dict[str, object] = field(default_factory=dict, compare=False)
    members: int = field(default=1, compare=False)  # mini-batches in the message this one came in

    @property
    def packed(self) -> bool:
        """One of several mini-batches in one message (see common/broker/packs.py)."""
        return self.members > 1

    @property
    def reason(self) -> str | None:
        """Why it was dead-lettered, for messages read from a dead queue."""
        value = self.headers.get(REASON_HEADER)
        return str(value) if value is not None else None


# Where a consumer's deliveries go. The node and the follower pass a SimpleQueue: a Queue's
# Python-level locking costs a busy process microseconds and a turn of the GIL per message.
Sink = queue.SimpleQueue[Delivery] | queue.Queue[Delivery]


class Broker(ABC):
    """Queues per job, confirmed publishing, prefetch-limited consumers, dead letters.

    Every method is safe to call from any thread.
    """

    # Signs the tries header of copies this broker publishes when settling (see packs.copy_headers);
    # a node with the fleet's key sets it, so copies it hands back are believed by the next node.
    tries_signer: TriesSigner | None = None
    # How long a node gathers reports before publishing them as one message (worker/report/reporter.py).
    # A message costs an in-memory queue next to nothing; see RabbitBroker for one that costs more.
    report_linger: float = 0.002

    @abstractmethod
    def declare_job(self, job_id: str, run_max_try: int) -> None:
        """Create the job's batches, reports and dead queues (idempotent)."""

    @abstractmethod
    def delete_job(self, job_id: str) -> None:
        """Remove the job's queues (after the job ended)."""

    @abstractmethod
    def publish(self, queue_name: str, bodies: Iterable[bytes], per_message: int = 1) -> int:
        """Publish persistently, up to `per_message` bodies in one message (see common/broker/packs.py);
        return how many bodies, once the broker has confirmed all of them."""

    def connect_consumers(self) -> None:
        """Start opening what consuming needs, without waiting (the first `consume` then finds it
        ready): a coordinator calls it before planning, which its follower's consumers wait for."""
        return None  # an in-memory broker has nothing to open

    @abstractmethod
    def consume(self, queue_name: str, prefetch: int, sink: Sink) -> str:
        """Start delivering to `sink`, at most `prefetch` unsettled; return a consumer tag."""

    @abstractmethod
    def set_prefetch(self, consumer_tag: str, prefetch: int) -> None:
        """Raise how many deliveries a consumer may hold unsettled (for new ones); a lower value is
        ignored, as a RabbitMQ consumer's window cannot shrink while it holds deliveries."""

    @abstractmethod
    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; its unsettled deliveries go back to the queue."""

    @abstractmethod
    def settle(self, delivery: Delivery, action: Settle, reason: str | None = None) -> None:
        """Ack, requeue (costs a try), dead-letter (with a reason) or release (see `release`) one delivery."""

    def settle_many(self, settles: Sequence[tuple[Delivery, Settle]]) -> None:
        """Settle several deliveries at once, each as `settle` would (dead letters without a reason).
        Every one is attempted; the first error is raised afterwards."""
        first_error: BrokerError | None = None
        for delivery, action in settles:
            try:
                self.settle(delivery, action)
            except BrokerError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    @abstractmethod
    def pause(self, consumer_tag: str) -> None:
        """Stop new deliveries to a consumer; what it holds stays unsettled until settled or released."""

    def release(self, delivery: Delivery) -> None:
        """Give back a delivery this node will not run (graceful stop) without costing it a try."""
        self.settle(delivery, "release")

    @abstractmethod
    def depth(self, queue_name: str) -> int:
        """Messages ready in a queue (not counting unsettled ones)."""

    @abstractmethod
    def purge(self, queue_name: str) -> int:
        """Drop ready messages; return how many."""

    @abstractmethod
    def announce(self, body: bytes, topic: Topic = "announce") -> None:
        """Fan a message out to every live subscriber of `topic`: job announcements go to workers,
        a worker's "hello" to coordinators (which answer with their jobs' announcements)."""

    @abstractmethod
    def subscribe_announcements(self, sink: Sink, topic: Topic = "announce") -> str:
        """Receive a topic's messages (auto-acked; Delivery.queue is the topic) on `sink`; return a consumer tag."""

    @abstractmethod
    def declare_reply_queue(self) -> str:
        """A queue for answers to this process (named like `bf.reply.<32 hex digits>`): not durable,
        deleted once its consumer is cancelled, or after a minute without one."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads."""
