"""What fleet commands trust: the signing key (or --insecure), the broker password, and the stores
a worker takes jobs from. A fleet member without a key refuses to start unless told otherwise."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from common.errors import UsageError

INSECURE_ENV = "BATCHFLEET_INSECURE"
PASSWORD_FILE_ENV = "BATCHFLEET_BROKER_PASSWORD_FILE"
BROKER_ENV = "BATCHFLEET_BROKER"

log = logging.getLogger(__name__)


def add_trust_flags(parser: argparse.ArgumentParser, key_help: str) -> None:
    parser.add_argument("--signing-key-file", type=Path, default=None, help=key_help)
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="on a fleet, run without a signing key: only on a trusted single host (or $BATCHFLEET_INSECURE=1)",
    )


def insecure_requested(ns: argparse.Namespace, env: Mapping[str, str]) -> bool:
    if getattr(ns, "insecure", None):
        return True
    value = env.get(INSECURE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise UsageError(f"${INSECURE_ENV} is {value!r}", "set it to 1 to run a fleet without a signing key, or unset it")


def signing_key(ns: argparse.Namespace, env: Mapping[str, str], fleet: bool, role: str) -> bytes | None:
    """The fleet's key. On a fleet, no key is refused (exit 2) unless --insecure, which is said once."""
    from common.redact import mask_in_logs
    from common.signing import load_key

    insecure = insecure_requested(ns, env)  # a bad $BATCHFLEET_INSECURE is refused, key or not
    key = load_key(getattr(ns, "signing_key_file", None), env)
    if key is not None:
        mask_in_logs(key.decode("utf-8", "replace"))
        return key
    if not fleet:
        return None
    if insecure:
        log.warning(
            "%s runs without a signing key (--insecure): anyone who can publish to the broker can run code "
            "on the workers and forge results; use this only on a trusted single host",
            role,
        )
        return None
    raise UsageError(
        f"{role} on a fleet needs a signing key",
        "pass --signing-key-file FILE or set BATCHFLEET_SIGNING_KEY_FILE (make one with: "
        "head -c 32 /dev/urandom | base64 > FILE), or --insecure on a trusted single host",
    )


def known_secrets(key: bytes | None, broker: str | None, env: Mapping[str, str]) -> tuple[str, ...]:
    """Values masked in everything a job writes: the key, the broker password, secrets in `env`."""
    from common.redact import secret_values_from_env, url_passwords

    found = secret_values_from_env(env) + (url_passwords(broker) if broker else [])
    if key is not None:
        found.append(key.decode("utf-8", "replace"))
    return tuple(dict.fromkeys(found))


def with_password_file(url: str | None, env: Mapping[str, str]) -> str | None:
    """`url` (one, or a cluster's comma-separated) with the password from $BATCHFLEET_BROKER_PASSWORD_FILE
    in each, when that is set."""
    from common.broker.urls import split_urls

    path = env.get(PASSWORD_FILE_ENV, "").strip()
    if url is None or not path:
        return url
    password = read_password(Path(path))
    return ",".join(with_password(one, password) for one in split_urls(url))


def warn_password_on_command_line(ns: argparse.Namespace) -> None:
    """Said once when the broker password came with --broker (not from a config file or the environment)."""
    from common.broker.urls import split_urls

    flag = getattr(ns, "broker", None)
    resolved = getattr(ns, "resolved_config", None)
    if resolved is not None and resolved.sources.get("broker") != "--broker":
        return
    if flag and any(_password(one) for one in split_urls(flag)):
        log.warning(
            "the broker password given with --broker is visible to every user of this machine; set $%s or $%s instead",
            BROKER_ENV,
            PASSWORD_FILE_ENV,
        )


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def read_password(path: Path) -> str:
    from common.redact import mask_in_logs

    try:
        password = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(
            f"cannot read the broker password file {path} (${PASSWORD_FILE_ENV}): {exc.strerror or exc}",
            "fix the path, or make the file readable by the user running batchfleet",
        ) from None
    if not password:
        raise UsageError(f"the broker password file {path} (${PASSWORD_FILE_ENV}) is empty")
    mask_in_logs(password, quote(password, safe=""))
    return password


def with_password(url: str, password: str) -> str:
    """`url` with `password` (percent-encoded) after its user name."""
    parts = urlsplit(url)
    if parts.password:
        raise UsageError(
            f"the broker URL already holds a password, and ${PASSWORD_FILE_ENV} gives another",
            "keep the password in one place: remove it from the URL",
        )
    if not parts.username:
        raise UsageError(
            f"${PASSWORD_FILE_ENV} is set but the broker URL names no user",
            "write the URL as amqps://USER@host:5671/vhost",
        )
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(unquote(parts.username), safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def store_roots(allowed: list[list[str]] | None, default_store: str) -> tuple[str, ...]:
    """The store roots a worker fetches job files and code from: --store-allow, else its store."""
    from common.storage.registry import SCHEMES

    roots = [root for group in allowed or [] for root in group] or [default_store]
    checked = []
    for root in roots:
        scheme, sep, rest = root.partition("://")
        if not sep:
            checked.append(str(Path(root).resolve()))
        elif scheme.lower() not in SCHEMES:
            raise UsageError(f"--store-allow {root!r}: unsupported scheme", "use a local folder or s3://bucket/prefix")
        elif not rest.strip("/"):
            raise UsageError(f"--store-allow {root!r} names no bucket", "write it as s3://bucket/prefix")
        else:
            checked.append(root.rstrip("/"))
    return tuple(dict.fromkeys(checked))
