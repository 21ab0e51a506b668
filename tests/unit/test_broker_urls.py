"""Several broker URLs (a RabbitMQ cluster's nodes): parsing, masking, refusals, and how the CLI takes them."""

from __future__ import annotations

import argparse

import pytest

from batchfleet.commands.common import add_connection_flags, broker_url
from common.broker.factory import open_broker
from common.broker.rabbitmq.broker import RabbitBroker
from common.broker.urls import check_cluster, join_urls, redact_url, split_urls
from common.errors import BrokerError, UsageError
from tests.cli_helpers import batchfleet
from tests.servers import free_port

A = "amqp://bf:pw-one@10.0.0.1:5672/jobs"
B = "amqp://bf:pw-two@10.0.0.2:5672/jobs"
C = "amqps://bf:pw-three@rabbit-3.internal:5671/jobs"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        (A, [A]),
        (f"{A},{B}", [A, B]),
        (f" {A} , {B} ,{C}, ", [A, B, C]),
        ([A, f"{B},{C}"], [A, B, C]),  # repeated --broker, each maybe comma-separated
        ([A, "", " "], [A]),
        (f"{A},{A},{B}", [A, B]),  # a node named twice is tried once
        ("amqp://bf:p,w@h1:5672/,amqp://bf:x@h2:5672/", ["amqp://bf:p,w@h1:5672/", "amqp://bf:x@h2:5672/"]),
        ("memory://", ["memory://"]),
    ],
)
def test_split_urls(value: object, expected: list[str]) -> None:
    assert split_urls(value) == expected  # type: ignore[arg-type]


def test_join_urls_is_the_environment_form() -> None:
    assert join_urls([A, B]) == f"{A},{B}"
    assert split_urls(join_urls([A, f" {B}, {C}"])) == [A, B, C]
    assert join_urls([]) is None
    assert join_urls(None) is None


def test_redact_masks_every_node_password() -> None:
    shown = redact_url(f"{A},{B},{C}")
    for secret in ("pw-one", "pw-two", "pw-three"):
        assert secret not in shown
    assert shown == (
        "amqp://bf:***@10.0.0.1:5672/jobs,amqp://bf:***@10.0.0.2:5672/jobs,amqps://bf:***@rabbit-3.internal:5671/jobs"
    )


def test_nodes_of_one_cluster_may_mix_amqp_and_amqps() -> None:
    check_cluster([A, C])
    check_cluster(["amqp://h1/", "amqp://h2"])  # no path and "/" are the same vhost


@pytest.mark.parametrize(
    ("urls", "needle"),
    [
        ([A, "memory://"], "memory://"),
        (["redis://u:secret-pw@h/", A], "redis://u:***@h/"),
        ([A, "amqp://bf:pw-two@10.0.0.2:5672/other"], "different vhosts ('jobs', 'other')"),
        ([A, "amqp://bf:pw-two@10.0.0.2:5672/"], "different vhosts ('/', 'jobs')"),
    ],
)
def test_urls_that_cannot_be_one_cluster_are_refused(urls: list[str], needle: str) -> None:
    with pytest.raises(UsageError) as info:
        open_broker(urls)
    line = info.value.line()
    assert needle in line
    assert "pw-one" not in line and "secret-pw" not in line


def test_no_node_answering_names_each_without_passwords() -> None:
    ports = [free_port(), free_port()]
    with pytest.raises(BrokerError) as info:
        RabbitBroker([f"amqp://bf:s3cret-{p}@127.0.0.1:{p}/" for p in ports], connect_timeout=5)
    line = info.value.line()
    assert line.startswith("no RabbitMQ node of 2 answered")
    for port in ports:
        assert f"127.0.0.1:{port}" in line
        assert f"s3cret-{port}" not in line
    assert "\n" not in line


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_flags(parser)
    return parser.parse_args(list(argv))


def test_repeated_broker_flags_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHFLEET_BROKER", f"{C}, {A}")
    assert broker_url(_parse("--broker", A, "--broker", f"{B},{C}")) == f"{A},{B},{C}"
    assert broker_url(_parse()) == f"{C},{A}"  # flags win over the environment, whole
    monkeypatch.setenv("BATCHFLEET_BROKER", " ")
    assert broker_url(_parse()) is None


def test_worker_check_with_no_live_node_is_one_line() -> None:
    first, second = free_port(), free_port()
    result = batchfleet(
        "worker",
        "--check",
        "--broker",
        f"amqp://bf:pw-one@127.0.0.1:{first}/",
        "--broker",
        f"amqp://bf:pw-two@127.0.0.1:{second}/",
    )
    assert result.code == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    text = result.stdout + result.stderr
    assert f"127.0.0.1:{first}" in text and f"127.0.0.1:{second}" in text
    assert "pw-one" not in text and "pw-two" not in text


def test_mixed_vhosts_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    urls = "amqp://bf:pw@127.0.0.1:1/a,amqp://bf:pw@127.0.0.1:2/b"
    result = batchfleet("coordinator", "--broker", urls, "--store", str(tmp_path), "--insecure")
    assert result.code == 2, result.stdout + result.stderr
    assert len(result.error_lines) == 1, result.stderr
    assert "different vhosts" in result.error_lines[0]


def test_a_profiles_brokers_list_is_tried_node_by_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`brokers = [...]` in batchfleet.toml reaches the client as the nodes of one cluster."""
    first, second = free_port(), free_port()
    config = tmp_path / "batchfleet.toml"
    config.write_text(
        "[profile.default]\n"
        f'brokers = ["amqp://bf:pw-one@127.0.0.1:{first}/", "amqp://bf:pw-two@127.0.0.1:{second}/"]\n'
    )
    result = batchfleet("worker", "--check", "--config", config)
    text = result.stdout + result.stderr
    assert result.code == 1, text
    assert "no RabbitMQ node of 2 answered" in text
    assert f"127.0.0.1:{first}" in text and f"127.0.0.1:{second}" in text
    assert "pw-one" not in text and "pw-two" not in text
