"""One contract for every Broker: the same assertions run on MemoryBroker and on a real RabbitMQ node.

RabbitMQ-only tests follow: throughput, connection errors, a node restart mid-consume, heartbeats.
"""

from __future__ import annotations

import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.broker.base import REASON_HEADER, Broker, Delivery, queue_names
from common.broker.factory import open_broker, redact_url
from common.broker.memory import MemoryBroker
from common.broker.rabbitmq.broker import RabbitBroker
from common.errors import BrokerError, UsageError
from tests.servers import REPO, RabbitNode, free_port, unavailable

pytestmark = pytest.mark.integration

WAIT = 15.0
README = REPO / "deploy" / "rabbitmq" / "README.md"


def take(sink: queue.Queue[Delivery], timeout: float = WAIT) -> Delivery:
    try:
        return sink.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no delivery within {timeout}s") from None


def quiet(sink: queue.Queue[Delivery], wait: float = 0.5) -> bool:
    """True when nothing more arrives for `wait` seconds."""
    try:
        extra = sink.get(timeout=wait)
    except queue.Empty:
        return True
    sink.put(extra)
    return False


def eventually(probe: Callable[[], Any], expected: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while (value := probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {expected!r}, still {value!r} after {timeout}s")
        time.sleep(0.05)


@pytest.fixture(params=["memory", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "memory":
        b: Broker = MemoryBroker()
    else:
        b = RabbitBroker(request.getfixturevalue("rabbitmq").url)
    yield b
    b.close()


@pytest.fixture
def job(broker: Broker) -> Iterator[str]:
    job_id = f"t{uuid.uuid4().hex[:10]}"
    broker.declare_job(job_id, run_max_try=3)
    yield job_id
    broker.delete_job(job_id)


def consume(broker: Broker, queue_name: str, prefetch: int = 1) -> tuple[str, queue.Queue[Delivery]]:
    sink: queue.Queue[Delivery] = queue.Queue()
    return broker.consume(queue_name, prefetch, sink), sink


# the contract


def test_publish_depth_purge(broker: Broker, job: str) -> None:
    names = queue_names(job)
    assert broker.publish(names.batches, (b"m%d" % i for i in range(25))) == 25
    eventually(lambda: broker.depth(names.batches), 25)
    assert broker.depth(names.reports) == 0
    assert broker.purge(names.batches) == 25
    eventually(lambda: broker.depth(names.batches), 0)


def test_consumers_connected_ahead_consume_as_usual(broker: Broker, job: str) -> None:
    """A coordinator opens its consuming connection while it plans: twice is harmless, and the
    consumers subscribed afterwards get their messages once each."""
    names = queue_names(job)
    broker.connect_consumers()
    broker.connect_consumers()
    broker.publish(names.reports, [b"r1", b"r2"])
    tag, sink = consume(broker, names.reports, prefetch=10)
    got = [take(sink), take(sink)]
    assert [d.body for d in got] == [b"r1", b"r2"] and quiet(sink)
    broker.settle_many([(d, "ack") for d in got])
    broker.cancel(tag)
    if isinstance(broker, RabbitBroker):
        assert broker._sub is not None and broker._sub is broker._consumer_link(), "one consuming connection"


def test_fifo_order_and_first_attempt(broker: Broker, job: str) -> None:
    names = queue_names(job)
    bodies = [b"%03d" % i for i in range(30)]
    broker.publish(names.batches, bodies)
    _, sink = consume(broker, names.batches, prefetch=50)
    got = [take(sink) for _ in bodies]
    assert [d.body for d in got] == bodies
    assert {d.attempt for d in got} == {1}
    assert all(d.queue == names.batches for d in got)
    for d in got:
        broker.settle(d, "ack")
    eventually(lambda: broker.depth(names.batches), 0)


@pytest.mark.parametrize(
    ("actions", "attempts", "dead_reason"),
    [
        (["ack"], [1], None),
        (["requeue", "ack"], [1, 2], None),
        (["requeue", "requeue", "requeue"], [1, 2, 3], "delivery_limit"),
        (["dead"], [1], "bad input"),
        (["requeue", "dead"], [1, 2], "bad input"),
    ],
)
def test_settle_table(
    broker: Broker, job: str, actions: list[str], attempts: list[int], dead_reason: str | None
) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"payload"])
    _, sink = consume(broker, names.batches)
    seen = []
    for action in actions:
        d = take(sink)
        seen.append(d.attempt)
        broker.settle(d, action, "bad input" if action == "dead" else None)  # type: ignore[arg-type]
    assert seen == attempts
    assert quiet(sink)
    _, dead = consume(broker, names.dead)
    if dead_reason is None:
        assert quiet(dead)
        return
    d = take(dead)
    assert (d.body, d.reason, d.attempt) == (b"payload", dead_reason, 1)
    assert d.headers[REASON_HEADER] == dead_reason
    broker.settle(d, "ack")


def test_dead_without_reason_says_rejected(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"x"])
    _, sink = consume(broker, names.batches)
    broker.settle(take(sink), "dead")
    _, dead = consume(broker, names.dead)
    assert take(dead).reason == "rejected"


def test_double_settle_is_an_error(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"x"])
    _, sink = consume(broker, names.batches)
    d = take(sink)
    broker.settle(d, "ack")
    with pytest.raises(BrokerError, match="already settled"):
        broker.settle(d, "ack")


def test_cancel_returns_unsettled_with_a_counted_try(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"a", b"b", b"c"])
    tag, sink = consume(broker, names.batches, prefetch=2)
    held = {take(sink).body, take(sink).body}
    assert quiet(sink)
    broker.cancel(tag)
    eventually(lambda: broker.depth(names.batches), 3)
    _, again = consume(broker, names.batches, prefetch=3)
    got = {d.body: d.attempt for d in (take(again), take(again), take(again))}
    assert got == {body: (2 if body in held else 1) for body in (b"a", b"b", b"c")}


def test_settle_after_cancel_is_ignored(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"a"])
    tag, sink = consume(broker, names.batches)
    d = take(sink)
    broker.cancel(tag)
    broker.settle(d, "ack")  # stale: the broker already took it back
    eventually(lambda: broker.depth(names.batches), 1)


def test_prefetch_is_respected(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"%d" % i for i in range(5)])
    _, sink = consume(broker, names.batches, prefetch=2)
    first = take(sink)
    take(sink)
    assert quiet(sink)
    eventually(lambda: broker.depth(names.batches), 3)
    broker.settle(first, "ack")
    take(sink)
    assert quiet(sink)
    eventually(lambda: broker.depth(names.batches), 2)


def test_raised_prefetch_reaches_a_running_consumer(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"%d" % i for i in range(10)])
    tag, sink = consume(broker, names.batches, prefetch=2)
    held = [take(sink), take(sink)]
    assert quiet(sink)
    broker.set_prefetch(tag, 5)
    held += [take(sink) for _ in range(3)]
    assert quiet(sink)
    broker.set_prefetch(tag, 3)  # lowering is ignored: the window stays 5
    broker.settle_many([(d, "ack") for d in held])
    rest = [take(sink) for _ in range(5)]
    assert quiet(sink)
    assert sorted(int(d.body) for d in held + rest) == list(range(10))
    assert all(d.attempt == 1 for d in held + rest)


def test_back_to_back_raises_each_widen_the_window(broker: Broker, job: str) -> None:
    # A raise that lands before the previous one's extra consumer is running (a qos round trip
    # later) must still get a consumer tag of its own, or pika drops the connection.
    names = queue_names(job)
    broker.publish(names.batches, [b"%d" % i for i in range(12)])
    tag, sink = consume(broker, names.batches, prefetch=1)
    held = [take(sink)]
    for window in range(2, 9):
        time.sleep(0.0003)
        broker.set_prefetch(tag, window)
    held += [take(sink) for _ in range(7)]
    assert quiet(sink)
    broker.settle_many([(d, "ack") for d in held])
    rest = [take(sink) for _ in range(4)]
    assert sorted(int(d.body) for d in held + rest) == list(range(12))
    assert all(d.attempt == 1 for d in held + rest)


def test_settle_many_mixes_acks_and_requeues(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.batches, [b"%d" % i for i in range(6)])
    _, sink = consume(broker, names.batches, prefetch=6)
    got = [take(sink) for _ in range(6)]
    # 4 stays held: acks below it may go as one multiple-ack, which must not touch 4 or the requeued 2
    broker.settle_many([(got[i], "requeue" if i == 2 else "ack") for i in (0, 1, 2, 3, 5)])
    again = take(sink)
    assert (again.body, again.attempt) == (b"2", 2)
    assert quiet(sink)
    with pytest.raises(BrokerError, match="already settled"):
        broker.settle_many([(got[0], "ack"), (got[4], "ack")])
    broker.settle(again, "ack")  # 4 was settled by the call that raised
    assert quiet(sink)
    eventually(lambda: broker.depth(names.batches), 0)


def test_work_is_shared_across_consumers(broker: Broker, job: str) -> None:
    names = queue_names(job)
    sinks = [consume(broker, names.batches, prefetch=1)[1] for _ in range(2)]
    broker.publish(names.batches, [b"a", b"b"])
    got = {take(sink).body for sink in sinks}
    assert got == {b"a", b"b"}


def test_reports_queue_has_no_delivery_limit(broker: Broker, job: str) -> None:
    names = queue_names(job)
    broker.publish(names.reports, [b"r"])
    _, sink = consume(broker, names.reports)
    for attempt in range(1, 6):
        d = take(sink)
        assert d.attempt == attempt
        broker.settle(d, "requeue")
    broker.settle(take(sink), "ack")


def test_missing_queue_is_a_broker_error(broker: Broker) -> None:
    missing = queue_names(f"gone{uuid.uuid4().hex[:8]}").batches
    for call in (
        lambda: broker.publish(missing, [b"x"]),
        lambda: broker.depth(missing),
        lambda: broker.consume(missing, 1, queue.Queue()),
    ):
        with pytest.raises(BrokerError) as info:
            call()
        assert missing in info.value.line()


def test_delete_job_is_idempotent(broker: Broker) -> None:
    job_id = f"t{uuid.uuid4().hex[:10]}"
    broker.declare_job(job_id, run_max_try=2)
    broker.declare_job(job_id, run_max_try=2)  # idempotent too
    broker.publish(queue_names(job_id).batches, [b"x"])
    broker.delete_job(job_id)
    broker.delete_job(job_id)
    with pytest.raises(BrokerError):
        broker.depth(queue_names(job_id).batches)


def test_announcements_reach_every_subscriber(broker: Broker) -> None:
    sinks: list[queue.Queue[Delivery]] = [queue.Queue(), queue.Queue()]
    tags = {broker.subscribe_announcements(sink) for sink in sinks}
    assert len(tags) == 2
    broker.announce(b"job submitted")
    for sink in sinks:
        d = take(sink)
        assert (d.body, d.attempt, d.queue) == (b"job submitted", 1, "announce")


def test_topics_are_separate(broker: Broker) -> None:
    jobs: queue.Queue[Delivery] = queue.Queue()
    hellos: queue.Queue[Delivery] = queue.Queue()
    broker.subscribe_announcements(jobs)
    broker.subscribe_announcements(hellos, topic="hello")
    broker.announce(b"a worker started", topic="hello")
    broker.announce(b"a job")
    assert take(hellos).body == b"a worker started"
    assert take(jobs).body == b"a job"
    assert quiet(jobs) and quiet(hellos)


def test_reply_queue_round_trip_and_auto_delete(broker: Broker) -> None:
    name = broker.declare_reply_queue()
    assert re.fullmatch(r"bf\.reply\.[0-9a-f]{32}", name)
    tag, sink = consume(broker, name)
    broker.publish(name, [b"accepted"])
    delivery = take(sink)
    assert delivery.body == b"accepted"
    broker.settle(delivery, "ack")
    broker.cancel(tag)
    eventually(lambda: _exists(broker, name), False)  # gone with its consumer
    with pytest.raises(BrokerError):
        broker.publish(name, [b"too late"])  # an answer to a submitter that left is refused, not lost silently


def _exists(broker: Broker, name: str) -> bool:
    try:
        broker.depth(name)
    except BrokerError:
        return False
    return True


# the factory


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://bf:s3cret@host:5672/vh", "amqp://bf:***@host:5672/vh"),
        ("amqps://bf:p%40ss@10.0.0.1/", "amqps://bf:***@10.0.0.1/"),
        ("amqp://host:5672/", "amqp://host:5672/"),
        ("memory://", "memory://"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_open_broker_picks_the_implementation(rabbitmq: Any) -> None:
    for url in (None, "memory://"):
        memory = open_broker(url)
        assert isinstance(memory, MemoryBroker)
        memory.close()
    rabbit = open_broker(rabbitmq.url, heartbeat=10)
    assert isinstance(rabbit, RabbitBroker)
    rabbit.close()
    with pytest.raises(UsageError, match=r"\*\*\*") as info:
        open_broker("redis://user:topsecret@host/")
    assert "topsecret" not in info.value.line()


# RabbitMQ only


def test_publish_throughput(rabbitmq: Any) -> None:
    broker = RabbitBroker(rabbitmq.url)
    job_id = f"t{uuid.uuid4().hex[:10]}"
    broker.declare_job(job_id, run_max_try=3)
    count, body = 20_000, b"x" * 200
    try:
        started = time.perf_counter()
        assert broker.publish(queue_names(job_id).batches, (body for _ in range(count))) == count
        rate = count / (time.perf_counter() - started)
        print(f"\nconfirmed publish throughput: {rate:,.0f} msg/s ({count} x {len(body)} B, persistent, quorum)")
        eventually(lambda: broker.depth(queue_names(job_id).batches), count)
        assert rate > 2_000, "publishing looks like one confirm wait per message"
    finally:
        broker.delete_job(job_id)
        broker.close()


def _connect_error(url: str) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        RabbitBroker(url, connect_timeout=5)
    return info.value


def test_wrong_password_is_one_line_without_the_password(rabbitmq: Any) -> None:
    host_port = rabbitmq.url.rsplit("@", 1)[1].strip("/")
    user = rabbitmq.url.split("//", 1)[1].split(":", 1)[0]
    line = _connect_error(f"amqp://{user}:Wr0ngPassw0rd@{host_port}/").line()
    assert "\n" not in line
    assert host_port in line
    assert "Wr0ngPassw0rd" not in line
    assert "password" in line


def test_unknown_vhost_names_the_vhost(rabbitmq: Any) -> None:
    line = _connect_error(rabbitmq.url.rstrip("/") + "/no-such-vhost").line()
    assert "no-such-vhost" in line
    assert rabbitmq.url.split(":")[2].split("@")[0] not in line  # the password


def test_unreachable_port_names_host_and_port() -> None:
    port = free_port()
    line = _connect_error(f"amqp://bf:s3cret@127.0.0.1:{port}/").line()
    assert f"127.0.0.1:{port}" in line
    assert "cannot reach" in line
    assert "s3cret" not in line


def _tls(rabbitmq: Any) -> tuple[str, Any]:
    if not rabbitmq.tls_url or rabbitmq.pki is None:
        unavailable("the test node has no TLS listener (needs the cryptography package and a private node)")
    return rabbitmq.tls_url, rabbitmq.pki


@pytest.mark.parametrize("client_cert", [False, True])
def test_amqps_with_ca_and_client_certificate(rabbitmq: Any, client_cert: bool) -> None:
    url, pki = _tls(rabbitmq)
    cert, key = (str(pki.client_cert), str(pki.client_key)) if client_cert else (None, None)
    broker = RabbitBroker(url, ca_file=str(pki.ca), cert_file=cert, key_file=key)
    job_id = f"t{uuid.uuid4().hex[:10]}"
    try:
        broker.declare_job(job_id, run_max_try=1)
        broker.publish(queue_names(job_id).batches, [b"over tls"])
        _, sink = consume(broker, queue_names(job_id).batches)
        d = take(sink)
        assert d.body == b"over tls"
        broker.settle(d, "ack")
    finally:
        broker.delete_job(job_id)
        broker.close()


def test_amqps_with_an_untrusted_server_certificate(rabbitmq: Any) -> None:
    url, _ = _tls(rabbitmq)
    line = _connect_error(url).line()  # system CAs do not know the test CA
    assert line.startswith("TLS handshake with RabbitMQ at 127.0.0.1:")
    assert "CERTIFICATE_VERIFY_FAILED" in line


def test_least_privilege_user_from_the_readme(rabbitmq: Any) -> None:
    """The set_permissions line in deploy/rabbitmq/README.md is enough for everything batchfleet does."""
    if not isinstance(rabbitmq, RabbitNode):
        unavailable("creating users needs the private test node")
    line = next(x for x in README.read_text().splitlines() if x.startswith("rabbitmqctl set_permissions"))
    configure, write, read = re.findall(r"'([^']*)'", line)
    user, password = f"least{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    assert rabbitmq.ctl("add_user", user, password).returncode == 0
    assert rabbitmq.ctl("set_permissions", "-p", "/", user, configure, write, read).returncode == 0
    broker = RabbitBroker(f"amqp://{user}:{password}@127.0.0.1:{rabbitmq.port}/")
    job_id = f"t{uuid.uuid4().hex[:10]}"
    names = queue_names(job_id)
    try:
        broker.declare_job(job_id, run_max_try=2)
        broker.publish(names.batches, [b"a", b"b"])
        _, sink = consume(broker, names.batches, prefetch=2)
        broker.settle(take(sink), "dead", "nope")
        broker.settle(take(sink), "requeue")
        broker.publish(names.reports, [b"r"])
        _, dead = consume(broker, names.dead)
        assert take(dead).reason == "nope"
        assert broker.depth(names.reports) == 1
        assert broker.purge(names.reports) == 1
        announcements: queue.Queue[Delivery] = queue.Queue()
        broker.subscribe_announcements(announcements)
        broker.announce(b"hello")
        assert take(announcements).body == b"hello"
        hellos: queue.Queue[Delivery] = queue.Queue()
        broker.subscribe_announcements(hellos, topic="hello")
        broker.announce(b"a worker", topic="hello")
        assert take(hellos).body == b"a worker"
        reply = broker.declare_reply_queue()
        _, answers = consume(broker, reply)
        broker.publish(reply, [b"accepted"])
        assert take(answers).body == b"accepted"
    finally:
        broker.delete_job(job_id)
        broker.close()


def test_settle_from_a_slow_thread_while_heartbeats_flow(rabbitmq: Any) -> None:
    """User code blocks 6 s with a 2 s heartbeat: the I/O thread keeps the connection alive."""
    broker = RabbitBroker(rabbitmq.url, heartbeat=2)
    job_id = f"t{uuid.uuid4().hex[:10]}"
    names = queue_names(job_id)
    try:
        broker.declare_job(job_id, run_max_try=3)
        broker.publish(names.batches, [b"slow"])
        _, sink = consume(broker, names.batches)
        delivery = take(sink)

        def run_user_code() -> None:
            time.sleep(6)
            broker.settle(delivery, "ack")

        worker = threading.Thread(target=run_user_code)
        worker.start()
        worker.join()
        broker.publish(names.batches, [b"next"])
        follow = take(sink)
        assert (follow.body, follow.attempt) == (b"next", 1), "the slow delivery came back: connection was lost"
        broker.settle(follow, "ack")
        eventually(lambda: broker.depth(names.batches), 0)
        assert quiet(sink)
    finally:
        broker.delete_job(job_id)
        broker.close()


@pytest.mark.parametrize("outage", ["stop", "kill"])
def test_node_restart_mid_consume_loses_nothing(rabbitmq: Any, outage: str) -> None:
    """Stop (or crash) the node while a consumer works and a publisher waits; every message ends up acked."""
    if not getattr(rabbitmq, "restartable", False):
        rabbitmq.restart()  # skips (or fails under CI) with the reason
    broker = RabbitBroker(rabbitmq.url, heartbeat=5)
    job_id = f"t{uuid.uuid4().hex[:10]}"
    names = queue_names(job_id)
    expected = {b"m%03d" % i for i in range(200)}
    broker.declare_job(job_id, run_max_try=10)
    broker.publish(names.batches, sorted(expected)[:100])
    if outage == "kill":
        time.sleep(2)  # RabbitMQ 3.10 may lose a quorum queue killed within ~1 s of its declaration
    acked: list[bytes] = []
    stop = threading.Event()
    _, sink = consume(broker, names.batches, prefetch=5)

    def work() -> None:
        while not stop.is_set():
            try:
                d = sink.get(timeout=0.2)
            except queue.Empty:
                continue
            time.sleep(0.01)
            broker.settle(d, "ack")  # settles from a dead connection are ignored, not raised
            acked.append(d.body)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        eventually(lambda: len(acked) >= 30, True)
        getattr(rabbitmq, outage)()
        late = threading.Thread(target=broker.publish, args=(names.batches, sorted(expected)[100:]))
        late.start()  # waits through the outage, returns once the new connection confirmed all
        rabbitmq.start()
        late.join(90)
        assert not late.is_alive()
        eventually(lambda: set(acked) == expected, True, timeout=90)
        eventually(lambda: broker.depth(names.batches), 0)
        time.sleep(1)
        assert quiet(sink)
        print(f"\n{outage}: {len(expected)} messages acked, {len(acked) - len(expected)} redelivered")
    finally:
        stop.set()
        worker.join()
        broker.delete_job(job_id)
        broker.close()


def test_consumers_opened_together_on_a_fresh_broker_are_opened_once(rabbitmq: Any) -> None:
    """The first consumers of a process, subscribed from several threads at once, share one consuming
    connection and are each opened once: a cancelled one must not live on, swallowing messages."""
    job_id = f"t{uuid.uuid4().hex[:10]}"
    setup = RabbitBroker(rabbitmq.url)
    setup.declare_job(job_id, run_max_try=2)
    try:
        for _ in range(5):
            _subscribe_together_then_cancel(rabbitmq.url, setup, job_id)
    finally:
        setup.delete_job(job_id)
        setup.close()


def _subscribe_together_then_cancel(url: str, setup: Broker, job_id: str) -> None:
    names = queue_names(job_id)
    broker = RabbitBroker(url)
    sinks: list[queue.Queue[Delivery]] = [queue.Queue() for _ in range(3)]
    tags: list[str] = []
    starts = [
        threading.Thread(target=lambda: tags.append(broker.consume(names.reports, 10, sinks[0]))),
        threading.Thread(target=lambda: tags.append(broker.subscribe_announcements(sinks[1], "hello"))),
        threading.Thread(target=lambda: tags.append(broker.consume(names.dead, 10, sinks[2]))),
    ]
    for thread in starts:
        thread.start()
    for thread in starts:
        thread.join(WAIT)
    try:
        for tag in tags:
            broker.cancel(tag)
        setup.publish(names.reports, [b"after the cancel"])
        later: queue.Queue[Delivery] = queue.Queue()
        tag = broker.consume(names.reports, 10, later)
        delivery = take(later)  # not taken by a stray copy of the cancelled consumer
        assert delivery.body == b"after the cancel" and sinks[0].empty()
        broker.settle(delivery, "ack")
        broker.cancel(tag)
    finally:
        broker.close()
