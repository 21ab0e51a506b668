"""Where a broker URL points, how to connect there, and what a failure to connect means, as one line."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions as pex
from pika.adapters.utils import connection_workflow as cwf

from common.errors import BrokerError

CONNECTION_FORCED = 320  # broker shutting down: a restart, not our fault


@dataclass(frozen=True)
class Endpoint:
    """Where a broker URL points, for messages; the password is kept only to scrub it."""

    host: str
    port: int
    vhost: str
    user: str
    secret: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def scrub(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    tls = parts.scheme == "amqps"
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    try:
        port = parts.port or (5671 if tls else 5672)
    except ValueError as exc:
        raise BrokerError(f"broker URL has an invalid port: {exc}", "use amqp://user:pass@host:5672/vhost") from None
    return Endpoint(
        host=parts.hostname or "localhost",
        port=port,
        vhost=vhost,
        user=unquote(parts.username or "guest"),
        secret=unquote(parts.password or ""),
    )


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """Verify the server (system CAs unless ca_file); present a client certificate when given."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def connection_parameters(
    url: str,
    *,
    role: str,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    heartbeat: int = 30,
    connect_timeout: float = 10,
) -> pika.URLParameters:
    """pika parameters for one attempt; reconnecting is ours, so pika tries once."""
    endpoint = parse_endpoint(url)
    try:
        params = pika.URLParameters(url)
    except Exception as exc:
        raise BrokerError(
            f"cannot parse broker URL for {endpoint.where}: {endpoint.scrub(str(exc))}",
            "use amqp://user:pass@host:5672/vhost",
        ) from None
    if url.startswith("amqps://"):
        try:
            context = tls_context(ca_file, cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(
                f"cannot load TLS files for {endpoint.where}: {exc}", "check the CA/cert/key paths"
            ) from None
        params.ssl_options = pika.SSLOptions(context, server_hostname=endpoint.host)
    if "heartbeat=" not in urlsplit(url).query:  # a heartbeat in the URL wins
        params.heartbeat = heartbeat
    params.connection_attempts = 1
    params.retry_delay = 0
    params.socket_timeout = connect_timeout
    params.stack_timeout = connect_timeout
    params.blocked_connection_timeout = None
    params.client_properties = {"connection_name": f"batchfleet {role} {socket.gethostname()} pid {os.getpid()}"}
    return params


@dataclass(frozen=True)
class Target:
    """One node to connect to: pika's parameters and where they point."""

    params: pika.URLParameters
    endpoint: Endpoint


def connection_targets(urls: Sequence[str], *, role: str, **options: Any) -> list[Target]:
    """A target per URL (one node, or each node of a cluster), in the order given."""
    return [Target(connection_parameters(url, role=role, **options), parse_endpoint(url)) for url in urls]


def none_answered(errors: Sequence[BrokerError]) -> BrokerError:
    """The first connection failed on every node: one error for one node, one line naming each for several."""
    if len(errors) == 1:
        return errors[0]
    reasons = "; ".join(error.message for error in errors)
    return BrokerError(f"no RabbitMQ node of {len(errors)} answered: {reasons}", errors[0].hint)


def _root_cause(exc: BaseException) -> BaseException:
    """Unwrap pika's connection-workflow wrappers down to the error that explains the failure."""
    for _ in range(8):
        if isinstance(exc, cwf.AMQPConnectionWorkflowFailed) and exc.exceptions:
            exc = exc.exceptions[-1]
        elif isinstance(exc, cwf.AMQPConnectorPhaseErrorBase) and exc.exception is not None:
            exc = exc.exception
        elif type(exc) is pex.AMQPConnectionError and exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            break
    return exc


def connect_error(exc: BaseException, endpoint: Endpoint) -> BrokerError:
    """One line naming host:port and what to check; never the password."""
    where, root = endpoint.where, _root_cause(exc)
    if isinstance(root, pex.ProbableAuthenticationError | pex.AuthenticationError):
        return BrokerError(
            f"RabbitMQ at {where} refused the login of user {endpoint.user!r} (ACCESS_REFUSED)",
            "check the user name and password in the broker URL",
        )
    if isinstance(root, pex.ProbableAccessDeniedError):
        return BrokerError(
            f"RabbitMQ at {where} denied user {endpoint.user!r} access to vhost {endpoint.vhost!r}",
            "check that the vhost exists and the user has permissions on it (rabbitmqctl set_permissions)",
        )
    if isinstance(root, ssl.SSLError):
        return BrokerError(
            f"TLS handshake with RabbitMQ at {where} failed ({root.reason or root})",
            "check amqps:// vs amqp://, the port, and the CA / client certificate files",
        )
    if isinstance(root, socket.gaierror):
        return BrokerError(f"cannot resolve RabbitMQ host {endpoint.host!r} ({where})", "check the host name")
    if isinstance(root, OSError):
        reason = root.strerror or type(root).__name__
        return BrokerError(
            f"cannot reach RabbitMQ at {where} ({reason})",
            "check that the broker is running and the URL's host and port",
        )
    if isinstance(root, cwf.AMQPConnectorStackTimeout | pex.ConnectionOpenAborted | pex.IncompatibleProtocolError):
        return BrokerError(
            f"RabbitMQ at {where} did not complete the AMQP handshake",
            "check that the port is an AMQP listener (5672 amqp, 5671 amqps)",
        )
    text = endpoint.scrub(" ".join(str(root).split()))[:200]
    return BrokerError(f"cannot connect to RabbitMQ at {where}: {type(root).__name__} {text}", "check the broker URL")


def channel_error(exc: BaseException, what: str, endpoint: Endpoint) -> BrokerError:
    """A broker-side channel close (404, 406, 403) as one line."""
    code = getattr(exc, "reply_code", None)
    text = endpoint.scrub(" ".join(str(getattr(exc, "reply_text", exc)).split()))
    if code == 404:
        return BrokerError(
            f"{what}: not found on {endpoint.where} ({text})", "the job may have ended or was never submitted"
        )
    if code == 406:
        return BrokerError(
            f"{what}: refused by {endpoint.where} ({text})",
            "a queue with that name exists with other settings; delete it or use a new job id",
        )
    if code == 403:
        return BrokerError(
            f"{what}: access refused by {endpoint.where} ({text})",
            "grant the user configure/write/read permissions",
        )
    return BrokerError(f"{what}: RabbitMQ at {endpoint.where} closed the channel ({code} {text})")
