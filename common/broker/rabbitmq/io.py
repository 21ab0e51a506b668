"""One AMQP connection owned by one I/O thread: connect, map errors, reconnect with capped backoff."""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions as pex
from pika.adapters.select_connection import IOLoop
from pika.adapters.utils import connection_workflow as cwf
from pika.channel import Channel

from common.errors import BrokerError

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 10.0
CONNECTION_FORCED = 320  # broker shutting down: a restart, not our fault
MAX_OP_TRIES = 5


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


class Op:
    """A request handed to the I/O thread; the caller waits on it."""

    def __init__(self, start: Callable[[Op], None]) -> None:
        self.start = start
        self.abandoned = False
        self.tries = 0
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def resolve(self, value: Any = None) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    def wait(self, timeout: float) -> Any:
        if not self._done.wait(timeout):
            self.abandoned = True
            return _TIMEOUT
        if self._error is not None:
            raise self._error
        return self._value


_TIMEOUT = object()


class AmqpLink:
    """A SelectConnection on a private I/O thread; nothing here ever waits on caller code.

    `on_up(connection)` runs on the I/O thread after every (re)connect, `on_down()` after every loss.
    """

    def __init__(
        self,
        params: pika.URLParameters,
        endpoint: Endpoint,
        name: str,
        on_up: Callable[[pika.SelectConnection], None],
        on_down: Callable[[], None],
        op_timeout: float,
    ) -> None:
        self.endpoint = endpoint
        self.op_timeout = op_timeout
        self._params = params
        self._on_up = on_up
        self._on_down = on_down
        self._ioloop = IOLoop()
        self._conn: pika.SelectConnection | None = None
        self._connected = False
        self._ever_connected = False
        self._closing = False
        self._failures = 0
        self._parked: list[Op] = []
        self._first = Op(lambda op: None)
        self._thread = threading.Thread(target=self._run, name=f"bf-amqp-{name}", daemon=True)

    # caller side

    def start(self) -> None:
        """Connect once; raise BrokerError when that first attempt fails."""
        self._thread.start()
        self._ioloop.add_callback_threadsafe(self._connect)
        timeout = float(self._params.stack_timeout or 10) + 5
        try:
            if self._first.wait(timeout) is _TIMEOUT:
                raise BrokerError(f"no answer from RabbitMQ at {self.endpoint.where} within {timeout:.0f}s")
        except BrokerError:
            self.close()
            raise

    def threadsafe(self, fn: Callable[[], None]) -> None:
        """Run fn on the I/O thread, connected or not."""
        if not self._closing:
            self._ioloop.add_callback_threadsafe(lambda: self._guard(fn))

    def call(self, start: Callable[[Op], None], what: str, timeout: float | None = None) -> Any:
        """Run start(op) on the I/O thread once connected; wait for op to resolve."""
        if self._closing:
            raise BrokerError(f"{what}: the broker connection to {self.endpoint.where} is closed")
        op = Op(start)
        self._ioloop.add_callback_threadsafe(lambda: self.run(op))
        limit = timeout or self.op_timeout
        value = op.wait(limit)
        if value is _TIMEOUT:
            raise BrokerError(
                f"{what}: no answer from RabbitMQ at {self.endpoint.where} within {limit:.0f}s",
                "check that the broker is up; batchfleet keeps reconnecting",
            )
        return value

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._thread.is_alive():
            self._ioloop.add_callback_threadsafe(self._shutdown)
            self._thread.join(timeout=15)
        if not self._thread.is_alive():
            self._ioloop.close()

    # I/O thread

    @property
    def connection(self) -> pika.SelectConnection | None:
        return self._conn if self._connected else None

    def run(self, op: Op) -> None:
        """Start op now if connected, else when the connection is back."""
        if op.abandoned or op.done:
            return
        if self._closing:
            op.fail(BrokerError(f"the broker connection to {self.endpoint.where} is closed"))
        elif not self._connected:
            self._parked.append(op)
        else:
            try:
                op.start(op)
            except Exception as exc:
                log.debug("broker operation failed to start", exc_info=True)
                op.fail(exc if isinstance(exc, BrokerError) else BrokerError(f"broker operation failed: {exc}"))

    def temp_channel(self, op: Op, what: str, body: Callable[[Channel], None]) -> None:
        """Open a channel for one request: broker errors fail op, a lost connection retries it."""
        conn = self.connection
        if conn is None:
            self._parked.append(op)
            return

        def closed(_ch: Channel, reason: BaseException) -> None:
            if op.done or op.abandoned:
                return
            op.tries += 1
            if isinstance(reason, pex.ChannelClosedByBroker | pex.ConnectionClosedByBroker) and (
                getattr(reason, "reply_code", 0) != CONNECTION_FORCED
            ):
                op.fail(channel_error(reason, what, self.endpoint))  # our request was refused: retrying won't help
            elif op.tries > MAX_OP_TRIES:
                op.fail(BrokerError(f"{what}: the connection to {self.endpoint.where} dropped {op.tries} times"))
            else:
                self._parked.append(op)

        def opened(ch: Channel) -> None:
            ch.add_on_close_callback(closed)
            body(ch)

        conn.channel(on_open_callback=opened)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self._ioloop.call_later(delay, lambda: self._guard(fn))

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("unexpected error on the broker I/O thread (%s)", self.endpoint.where)

    def _run(self) -> None:
        try:
            self._ioloop.start()
        except Exception:
            log.exception("broker I/O loop for %s stopped", self.endpoint.where)

    def _connect(self) -> None:
        if self._closing:
            return
        self._conn = pika.SelectConnection(
            self._params,
            on_open_callback=self._opened,
            on_open_error_callback=self._open_failed,
            on_close_callback=self._lost,
            custom_ioloop=self._ioloop,
        )

    def _opened(self, conn: pika.SelectConnection) -> None:
        self._connected = True
        if self._ever_connected:
            log.info("reconnected to RabbitMQ at %s", self.endpoint.where)
        self._ever_connected = True
        self._failures = 0
        conn.add_on_connection_blocked_callback(self._blocked)
        conn.add_on_connection_unblocked_callback(self._unblocked)
        self._guard(lambda: self._on_up(conn))
        self._first.resolve()
        parked, self._parked = self._parked, []
        for op in parked:
            self.run(op)

    def _open_failed(self, _conn: pika.SelectConnection, exc: BaseException) -> None:
        if self._closing:
            self._ioloop.stop()  # close() aborted a connection that was still opening
            return
        error = connect_error(exc, self.endpoint)
        if not self._ever_connected:
            self._first.fail(error)
            return
        self._retry(error.line())

    def _lost(self, _conn: pika.SelectConnection, reason: BaseException) -> None:
        was_connected, self._connected = self._connected, False
        if was_connected:
            self._guard(self._on_down)
        if self._closing:
            self._ioloop.stop()
            return
        if was_connected:
            text = self.endpoint.scrub(" ".join(str(reason).split()))[:200]
            log.warning("lost the connection to RabbitMQ at %s (%s); reconnecting", self.endpoint.where, text)
            self._retry(text)

    def _retry(self, why: str) -> None:
        self._failures += 1
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (self._failures - 1)) * random.uniform(0.8, 1.2)
        if self._failures > 1:
            log.warning("RabbitMQ at %s still unavailable (%s); next try in %.1fs", self.endpoint.where, why, delay)
        self._ioloop.call_later(delay, self._connect)

    def _blocked(self, _conn: Any, _frame: Any) -> None:
        log.warning("RabbitMQ at %s blocked publishing (memory or disk alarm); waiting", self.endpoint.where)

    def _unblocked(self, _conn: Any, _frame: Any) -> None:
        log.info("RabbitMQ at %s unblocked publishing", self.endpoint.where)

    def _shutdown(self) -> None:
        for op in self._parked:
            op.fail(BrokerError(f"the broker connection to {self.endpoint.where} is closed"))
        self._parked.clear()
        conn = self._conn
        if conn is not None and not (conn.is_closed or conn.is_closing):
            conn.close()  # _lost stops the loop once the close completes
        else:
            self._ioloop.stop()


Step = Callable[[Callable[[Any], None]], None]  # a channel call that takes its completion callback


def run_steps(ch: Channel, op: Op, steps: list[Step], result: Callable[[Any], Any]) -> None:
    """Run channel calls one after another (each takes a callback), then resolve op and close the channel."""

    def step(index: int, frame: Any) -> None:
        if index == len(steps):
            op.resolve(result(frame))
            if ch.is_open:
                ch.close()
            return
        steps[index](lambda f: step(index + 1, f))

    step(0, None)


def delete_step(ch: Channel, name: str) -> Step:
    def step(callback: Callable[[Any], None]) -> None:
        ch.queue_delete(name, callback=callback)

    return step
