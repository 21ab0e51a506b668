"""Flags and helpers several commands share."""

from __future__ import annotations

import argparse
import os
from typing import Any

from common.storage import StorageOptions


def add_log_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=None, help="batchfleet's own log level (default WARNING)")


class _JoinUrls(argparse.Action):
    """--broker repeated: one string, the URLs comma-separated (the form BATCHFLEET_BROKER takes)."""

    def __call__(self, _parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, _opt: Any = None) -> None:
        earlier = getattr(ns, self.dest, None)
        setattr(ns, self.dest, f"{earlier},{values}" if earlier else values)


def add_connection_flags(parser: argparse.ArgumentParser, store: bool = True) -> None:
    """--broker, --store and S3 options, with their environment variable defaults."""
    # Each default: the environment variable named, else batchfleet.toml (see `batchfleet config show`).
    parser.add_argument(
        "--broker",
        action=_JoinUrls,
        default=None,
        help="amqp(s):// URL; repeat it (or separate with commas) for the nodes of a RabbitMQ cluster; "
        "default $BATCHFLEET_BROKER (comma-separated), else embedded",
    )
    if store:
        parser.add_argument("--store", default=None, help="job area root (default $BATCHFLEET_STORE or ./.batchfleet)")
    parser.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (MinIO); default from AWS settings")
    parser.add_argument("--s3-region", default=None, help="S3 region; default from AWS settings")
    parser.add_argument("--s3-path-style", action="store_true", default=None, help="path-style S3 addressing")
    parser.add_argument("--s3-ca-bundle", default=None, help="CA bundle for an https S3 endpoint")
    parser.add_argument("--broker-ca", default=None, help="CA file for amqps:// (default $BATCHFLEET_BROKER_CA)")
    parser.add_argument("--broker-cert", default=None, help="client certificate for amqps://")
    parser.add_argument("--broker-key", default=None, help="client key for amqps://")


def storage_options(ns: argparse.Namespace) -> StorageOptions:
    return StorageOptions(
        endpoint_url=getattr(ns, "s3_endpoint_url", None) or os.environ.get("BATCHFLEET_S3_ENDPOINT_URL"),
        region=getattr(ns, "s3_region", None),
        path_style=getattr(ns, "s3_path_style", None),
        ca_bundle=getattr(ns, "s3_ca_bundle", None),
    )


def broker_url(ns: argparse.Namespace) -> str | None:
    """The broker's URLs as one comma-separated string (a cluster's nodes), from --broker or the
    environment, each with the password from $BATCHFLEET_BROKER_PASSWORD_FILE when that is set;
    None for the embedded broker."""
    from batchfleet.commands.trust import with_password_file
    from common.broker.urls import join_urls

    url = join_urls(getattr(ns, "broker", None)) or join_urls(os.environ.get("BATCHFLEET_BROKER"))
    return with_password_file(url, os.environ)


def store_uri(ns: argparse.Namespace) -> str:
    from coordinator.runner import default_store

    return getattr(ns, "store", None) or default_store()


def tls_options(ns: argparse.Namespace) -> dict[str, Any]:
    return {
        "ca_file": getattr(ns, "broker_ca", None) or os.environ.get("BATCHFLEET_BROKER_CA"),
        "cert_file": getattr(ns, "broker_cert", None) or os.environ.get("BATCHFLEET_BROKER_CERT"),
        "key_file": getattr(ns, "broker_key", None) or os.environ.get("BATCHFLEET_BROKER_KEY"),
    }


def open_broker_from(ns: argparse.Namespace):  # type: ignore[no-untyped-def]
    from batchfleet.commands.trust import warn_password_on_command_line
    from common.broker.factory import open_broker

    warn_password_on_command_line(ns)
    return open_broker(broker_url(ns), **tls_options(ns))
