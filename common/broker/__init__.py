"""Message brokers: one interface, an in-memory one and RabbitMQ."""

from common.broker.base import Broker, Delivery, Settle, queue_names

__all__ = ["Broker", "Delivery", "Settle", "queue_names"]
