"""Broker URLs: one, or several nodes of one RabbitMQ cluster, and how they are shown with passwords masked.

Several URLs travel as one comma-separated string (the form of `BATCHFLEET_BROKER`), split only at a
comma followed by a scheme, so a comma inside a password does not cut a URL in two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

from common.errors import UsageError

AMQP_SCHEMES = ("amqp", "amqps")
_NEXT_URL = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")
URL_HINT = "use amqp://user:pass@host:5672/vhost; list a cluster's nodes comma-separated or repeat --broker"


def split_urls(value: str | Iterable[str] | None) -> list[str]:
    """The URLs in a comma-separated string, or in a list of them (a profile's `brokers = [...]`,
    repeated `--broker` flags), each of which may itself be comma-separated. Blanks are dropped."""
    if value is None:
        return []
    parts = [value] if isinstance(value, str) else list(value)
    urls: list[str] = []
    for part in parts:
        urls.extend(u.strip() for u in _NEXT_URL.split(part.strip().strip(",")) if u.strip())
    return list(dict.fromkeys(urls))  # a node named twice is tried once


def join_urls(value: str | Iterable[str] | None) -> str | None:
    """One string for the environment (BATCHFLEET_BROKER) or a child's argv; None when empty."""
    return ",".join(split_urls(value)) or None


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def check_cluster(urls: list[str]) -> None:
    """Several URLs must all be RabbitMQ nodes serving the same vhost: they are one broker."""
    if len(urls) < 2:
        return
    odd = [u for u in urls if scheme_of(u) not in AMQP_SCHEMES]
    if odd:
        raise UsageError(f"broker URL {redact_url(odd[0])!r} cannot be one of several nodes", URL_HINT)
    vhosts = {_vhost(u) for u in urls}
    if len(vhosts) > 1:
        shown = ", ".join(repr(v) for v in sorted(vhosts))
        raise UsageError(
            f"the broker URLs name different vhosts ({shown}); they must be nodes of one cluster",
            "give every URL the same /vhost (none means '/')",
        )


def _vhost(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def redact_url(url: str) -> str:
    """The URL (or comma-separated URLs) with passwords replaced by ***, safe for logs and reports."""
    urls = split_urls(url)
    if len(urls) > 1:
        return ",".join(_redact_one(u) for u in urls)
    return _redact_one(url)


def _redact_one(url: str) -> str:
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
