"""One AMQP connection owned by one I/O thread: connect, fail over between a cluster's nodes, reconnect
with capped backoff."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.select_connection import IOLoop
from pika.channel import Channel

from common.broker.rabbitmq.endpoint import (
    CONNECTION_FORCED,
    Endpoint,
    Target,
    channel_error,
    connect_error,
    none_answered,
)
from common.errors import BrokerError

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 10.0
MAX_OP_TRIES = 5


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

    `targets` are the nodes of one broker (one URL, or several nodes of a cluster): the link connects
    to the first that answers, and when its node is lost it tries the next ones at once, backing off
    only after every node failed in a row.
    `on_up(connection)` runs on the I/O thread after every (re)connect, `on_down()` after every loss.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        name: str,
        on_up: Callable[[pika.SelectConnection], None],
        on_down: Callable[[], None],
        op_timeout: float,
    ) -> None:
        if not targets:
            raise ValueError("a link needs at least one broker URL")
        self.op_timeout = op_timeout
        self._targets = list(targets)
        self._index = 0  # the node connected to, or being tried
        self._tried = 0  # nodes tried since the last connection or the last full round
        self._first_errors: list[BrokerError] = []
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

    @property
    def endpoint(self) -> Endpoint:
        """The node this link is connected to (or trying), for messages."""
        return self._targets[self._index].endpoint

    # caller side

    def start(self) -> None:
        """Connect to the first node that answers; raise BrokerError when none does."""
        self._thread.start()
        self._ioloop.add_callback_threadsafe(self._connect)
        timeout = sum(float(t.params.stack_timeout or 10) for t in self._targets) + 5
        try:
            if self._first.wait(timeout) is _TIMEOUT:
                where = ", ".join(t.endpoint.where for t in self._targets)
                raise BrokerError(f"no answer from RabbitMQ at {where} within {timeout:.0f}s")
        except BrokerError:
            self.close()
            raise

    def threadsafe(self, fn: Callable[[], None]) -> None:
        """Run fn on the I/O thread, connected or not."""
        if not self._closing:
            self._ioloop.add_callback_threadsafe(lambda: self._guard(fn))

    def call(self, start: Callable[[Op], None], what: str, timeout: float | None = None) -> Any:
        """Run start(op) on the I/O thread once connected; wait for op to resolve."""
        return self.call_all([start], what, timeout)[0]

    def call_all(self, starts: Sequence[Callable[[Op], None]], what: str, timeout: float | None = None) -> list[Any]:
        """Like call, for requests that run at the same time; raises the first failure once all are done."""
        if self._closing:
            raise BrokerError(f"{what}: the broker connection to {self.endpoint.where} is closed")
        ops = [Op(start) for start in starts]
        for op in ops:
            self._ioloop.add_callback_threadsafe(partial(self.run, op))
        limit = timeout or self.op_timeout
        deadline = time.monotonic() + limit
        values: list[Any] = []
        first_error: Exception | None = None
        for op in ops:
            try:
                values.append(op.wait(max(0.0, deadline - time.monotonic())))
            except Exception as exc:  # raised once every request is done
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        if any(value is _TIMEOUT for value in values):
            raise BrokerError(
                f"{what}: no answer from RabbitMQ at {self.endpoint.where} within {limit:.0f}s",
                "check that the broker is up; batchfleet keeps reconnecting",
            )
        return values

    def close(self) -> None:
        self.begin_close()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        if not self._thread.is_alive():
            self._ioloop.close()

    def begin_close(self) -> None:
        """Start closing without waiting, so a process's connections close together (close() waits)."""
        if self._closing:
            return
        self._closing = True
        if self._thread.is_alive():
            self._ioloop.add_callback_threadsafe(self._shutdown)

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
        while True:
            try:
                self._ioloop.start()
                return
            except Exception as exc:
                if self._closing:
                    log.exception("broker I/O loop for %s stopped", self.endpoint.where)
                    return
                self._escaped(exc)

    def _escaped(self, exc: Exception) -> None:
        """An error pika let out of its loop: give up that connection and carry on as if it had failed.

        A socket reset between pika's connect and its getpeername() raises ValueError out of the loop
        (seen when a node's way in was cut while the client connected); before this, the I/O thread
        died with it and every later publish waited out its stall.
        """
        log.warning("the connection to RabbitMQ at %s broke inside pika (%s: %s); dropping it",
                    self.endpoint.where, type(exc).__name__, exc)  # fmt: skip
        conn, self._conn = self._conn, None  # its late callbacks are ignored (see _current)
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # half-made: nothing of it is worth saving
                log.debug("closing a broken connection failed", exc_info=True)
        if self._connected:
            self._guard(lambda: self._lost(None, exc))
        else:
            self._guard(lambda: self._open_failed(None, exc))

    def _connect(self) -> None:
        if self._closing:
            return
        self._conn = pika.SelectConnection(
            self._targets[self._index].params,
            on_open_callback=self._current(self._opened),
            on_open_error_callback=self._current(self._open_failed),
            on_close_callback=self._current(self._lost),
            custom_ioloop=self._ioloop,
        )

    def _current(self, callback: Callable[..., None]) -> Callable[..., None]:
        """Call `callback` only for the link's current connection, not one given up by `_escaped`."""

        def call(conn: pika.SelectConnection, *args: Any) -> None:
            if conn is self._conn:
                callback(conn, *args)

        return call

    def _opened(self, conn: pika.SelectConnection) -> None:
        self._connected = True
        if self._ever_connected:
            log.info("reconnected to RabbitMQ at %s", self.endpoint.where)
        self._ever_connected = True
        self._failures = self._tried = 0
        self._first_errors.clear()
        conn.add_on_connection_blocked_callback(self._blocked)
        conn.add_on_connection_unblocked_callback(self._unblocked)
        self._guard(lambda: self._on_up(conn))
        self._first.resolve()
        parked, self._parked = self._parked, []
        for op in parked:
            self.run(op)

    def _open_failed(self, _conn: pika.SelectConnection | None, exc: BaseException) -> None:
        if self._closing:
            self._ioloop.stop()  # close() aborted a connection that was still opening
            return
        error = connect_error(exc, self.endpoint)
        if not self._ever_connected:
            self._first_errors.append(error)
            if len(self._first_errors) < len(self._targets):
                self._index += 1  # the first connection tries each node once, in the order given
                self._ioloop.call_later(0, self._connect)
            else:
                self._first.fail(none_answered(self._first_errors))
            return
        failed = self.endpoint.where
        if self._next_node(error.line()):
            log.warning("RabbitMQ at %s unavailable (%s); trying %s", failed, error.line(), self.endpoint.where)

    def _lost(self, _conn: pika.SelectConnection | None, reason: BaseException) -> None:
        was_connected, self._connected = self._connected, False
        if was_connected:
            self._guard(self._on_down)
        if self._closing:
            self._ioloop.stop()
            return
        if was_connected:
            text = self.endpoint.scrub(" ".join(str(reason).split()))[:200]
            log.warning("lost the connection to RabbitMQ at %s (%s); reconnecting", self.endpoint.where, text)
            self._tried = 0
            if self._next_node(text):
                log.info("trying RabbitMQ at %s", self.endpoint.where)

    def _next_node(self, why: str) -> bool:
        """Fail over to the next node at once (a lost node's peers are likely up); back off only
        once every node has failed in a row. With one node this is a plain reconnect with backoff.
        True when the next node is tried at once."""
        self._index = (self._index + 1) % len(self._targets)
        self._tried += 1
        if self._tried < len(self._targets):
            self._ioloop.call_later(0, self._connect)
            return True
        self._tried = 0
        self._retry(why)
        return False

    def _retry(self, why: str) -> None:
        self._failures += 1
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (self._failures - 1)) * random.uniform(0.8, 1.2)
        if self._failures > 1:
            where = self.endpoint.where if len(self._targets) == 1 else f"any of {len(self._targets)} nodes"
            log.warning("RabbitMQ at %s still unavailable (%s); next try in %.1fs", where, why, delay)
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
