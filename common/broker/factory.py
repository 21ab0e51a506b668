"""Pick a broker from its URLs: none or memory:// is in-process, amqp(s):// is RabbitMQ (one node or several)."""

from __future__ import annotations

from collections.abc import Iterable

from common.broker.base import Broker
from common.broker.urls import AMQP_SCHEMES, check_cluster, redact_url, scheme_of, split_urls
from common.errors import UsageError

__all__ = ["open_broker", "redact_url"]


def open_broker(
    url: str | Iterable[str] | None,
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    heartbeat: int = 30,
    connect_timeout: float = 10,
) -> Broker:
    """The broker that serves `url` (a URL, comma-separated URLs of one cluster's nodes, or a list of them);
    raises BrokerError when no RabbitMQ node can be reached."""
    urls = split_urls(url)
    if not urls or urls == ["memory://"]:
        from common.broker.memory import MemoryBroker

        return MemoryBroker()
    check_cluster(urls)
    if scheme_of(urls[0]) in AMQP_SCHEMES:
        from common.broker.rabbitmq.broker import RabbitBroker

        return RabbitBroker(
            urls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
        )
    raise UsageError(
        f"unsupported broker URL {redact_url(urls[0])!r}",
        "use amqp://user:pass@host:5672/vhost, amqps://... or leave it unset for the in-process broker",
    )
