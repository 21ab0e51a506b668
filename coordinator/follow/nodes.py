"""Node ids are unique in a job: the first live session of an id holds it, a second is refused.

A node process draws a random session token (worker/intake/identity.py) and sends it with every
event. Two live processes with one id (a cloned machine, a copied env file) would otherwise look
like one node; the coordinator answers the second with a "refused" announcement naming both hosts,
and that node leaves the job (handing back what it took, at no cost of a try).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from common.messages import JobEvent

LIVE_FOR = 15.0  # a holder not heard from for this long (three missed heartbeats) has gone
REFUSE_EVERY = 10.0  # at most one refusal per session this often, though its events keep coming


@dataclass
class Holder:
    session: str
    host: str
    last_seen: float
    stopped: bool = False


@dataclass(frozen=True)
class Admission:
    counts: bool  # apply the event to the tally (False: it comes from a refused session)
    refusal: str | None = None  # send this refusal now


class NodeRegistry:
    """Which session holds each node id in one job."""

    def __init__(self, live_for: float = LIVE_FOR, clock: Callable[[], float] = time.monotonic) -> None:
        self.live_for = live_for
        self.clock = clock
        self._holders: dict[str, Holder] = {}
        self._refused: dict[tuple[str, str], float] = {}

    def check(self, event: JobEvent) -> Admission:
        """Register the event's session for its node id, or refuse it when another live session holds the id."""
        if not event.session:
            return Admission(True)  # a node from before session tokens: nothing to compare
        now = self.clock()
        holder = self._holders.get(event.node_id)
        if holder is not None and holder.session == event.session:
            holder.last_seen, holder.stopped = now, event.kind == "node_stopped"
            holder.host = event.host or holder.host
            return Admission(True)
        if holder is None or not self._live(holder, now):
            if event.kind != "node_stopped":  # a session that left without joining claims nothing
                self._holders[event.node_id] = Holder(event.session, event.host or "an unnamed host", now)
            return Admission(True)
        if event.kind == "node_stopped":
            return Admission(False)  # a refused session leaving
        key = (event.node_id, event.session)
        last = self._refused.get(key)
        if last is not None and now - last < REFUSE_EVERY:
            return Admission(False)
        self._refused[key] = now
        return Admission(
            False,
            f"node id {event.node_id} is already used by {holder.host}; {event.host or 'another host'} "
            f"with the same id was refused: give each worker its own --node-id",
        )

    def _live(self, holder: Holder, now: float) -> bool:
        return not holder.stopped and now - holder.last_seen <= self.live_for
