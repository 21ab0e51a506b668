"""The coordinator's one way to settle what it consumed: reports, dead letters and submissions."""

from __future__ import annotations

from collections.abc import Iterable

from common.broker.base import Broker, Delivery, Settle


def settle(broker: Broker, deliveries: Iterable[Delivery], action: Settle = "ack", reason: str | None = None) -> None:
    """Settle every delivery the same way, in one call where the broker allows; raises BrokerError."""
    taken = list(deliveries)
    if not taken:
        return
    if reason is not None:
        for delivery in taken:
            broker.settle(delivery, action, reason)
        return
    broker.settle_many([(delivery, action) for delivery in taken])
