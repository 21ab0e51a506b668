"""A node toward the coordinators: a hello when it starts, and leaving a job that refused its id.

The hello (topic "hello") makes every coordinator announce its running jobs at once, so a node
started mid-job joins in well under a second rather than at the next periodic announcement. A
"refused" announcement for this node's id and session means another live node already serves the
job under the same id: this node leaves the job and tries again only after LIVE_FOR seconds
(by then the other may be gone, e.g. when it was this node's own previous run).
"""

from __future__ import annotations

import logging
import threading
import time

from common.broker.base import Broker
from common.errors import BatchfleetError
from common.messages import JobAnnouncement, NodeHello

log = logging.getLogger(__name__)

BENCHED_FOR = 30.0  # seconds a refused node stays away from the job (the coordinator's LIVE_FOR is 15)


class Membership:
    """This node's id and session, as coordinators see them."""

    def __init__(self, broker: Broker, node_id: str, session: str, host: str) -> None:
        self.broker = broker
        self.node_id = node_id
        self.session = session
        self.host = host
        self._benched: dict[str, float] = {}  # job -> until when (monotonic)
        self._told: set[str] = set()
        self._lock = threading.Lock()

    def hello(self) -> None:
        """Ask the coordinators for their jobs now; a broker error only delays that to their next announcement."""
        body = NodeHello(node_id=self.node_id, session=self.session, host=self.host).model_dump_json()
        try:
            self.broker.announce(body.encode(), topic="hello")
        except BatchfleetError as exc:
            log.warning("could not say hello to the coordinators (%s); jobs arrive with their next announcement",
                        exc.line())  # fmt: skip

    def refuses_me(self, announcement: JobAnnouncement) -> bool:
        """True when the announcement refuses this node process: it must leave the job."""
        if announcement.state != "refused" or (announcement.node_id, announcement.session) != (
            self.node_id,
            self.session,
        ):
            return False  # another node's refusal (or a forged one naming another session)
        job_id = announcement.job_id
        with self._lock:
            self._benched[job_id] = time.monotonic() + BENCHED_FOR
            first = job_id not in self._told
            self._told.add(job_id)
        level = logging.ERROR if first else logging.INFO
        log.log(level, "leaving job %s: %s (this node: %s)", job_id, announcement.detail or "node id in use",
                self.host)  # fmt: skip
        return True

    def benched(self, job_id: str) -> bool:
        """Refused lately: do not serve the job again yet."""
        with self._lock:
            until = self._benched.get(job_id)
            if until is None:
                return False
            if time.monotonic() < until:
                return True
            del self._benched[job_id]
            return False
