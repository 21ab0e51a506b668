"""Pick a broker from a URL: none or memory:// is in-process, amqp(s):// is RabbitMQ."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from common.broker.base import Broker
from common.errors import UsageError


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, safe for logs and reports."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    try:
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def open_broker(
    url: str | None,
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    heartbeat: int = 30,
    connect_timeout: float = 10,
) -> Broker:
    """The broker that serves `url`; raises BrokerError when RabbitMQ cannot be reached."""
    if url is None or url.strip() in {"", "memory://"}:
        from common.broker.memory import MemoryBroker

        return MemoryBroker()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in {"amqp", "amqps"}:
        from common.broker.rabbitmq.broker import RabbitBroker

        return RabbitBroker(
            url,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
        )
    raise UsageError(
        f"unsupported broker URL {redact_url(url)!r}",
        "use amqp://user:pass@host:5672/vhost, amqps://... or leave it unset for the in-process broker",
    )
