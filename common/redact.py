"""Mask passwords and keys in text before it reaches a log, a report or `status` output."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

MASK = "***"
# Shorter values would mask ordinary words all over the log; URL and key=value patterns
# still catch short passwords where they appear.
MIN_SECRET_LENGTH = 4

# scheme://user:password@host. The password runs to the last '@' before a delimiter, as URL
# parsers read it, so an unencoded '@' in a password does not leak the rest of it.
_URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"<>]*:)"
    r"(?P<secret>[^\s'\"<>]+)(?=@[^\s'\"<>@]*(?:[\s'\"<>]|$))"
)
# A comma that starts another URL: a list of broker nodes is several URLs, each with its own password.
_NEXT_URL = re.compile(r",(?=[A-Za-z][A-Za-z0-9+.-]*://)")
# name=value, name: value, "name": "value", 'name': 'value' for names that always carry secrets.
_SECRET_NAMES = (
    r"aws_secret_access_key|secret_access_key|secretaccesskey|aws_session_token|session_token"
    r"|sessiontoken|batchfleet_signing_key|signing_key|password|passwd|x-amz-signature"
    r"|x-amz-security-token|x-amz-credential"
)
_NAME_WORDS = ("secret", "token", "signing_key", "passw", "x-amz-")  # every name above holds one
_NAMED_SECRET = re.compile(
    rf"(?P<head>(?<![A-Za-z0-9])(?:{_SECRET_NAMES})[\"']?\s*[:=]\s*[\"']?)(?P<secret>[^\s\"',;&}}\]]+)",
    re.IGNORECASE,
)
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "BATCHFLEET_SIGNING_KEY")
_SECRET_ENV_SUFFIXES = ("_PASSWORD", "_SECRET", "_SECRET_KEY", "_TOKEN")
# batchfleet's own secrets, which user code never needs: the signing key, where it is kept (systemd
# puts credentials in $CREDENTIALS_DIRECTORY), and the broker's URL, password file and TLS key.
_OWN_SECRET_ENV = ("BATCHFLEET_SIGNING_KEY", "BATCHFLEET_SIGNING_KEY_FILE", "CREDENTIALS_DIRECTORY")
_OWN_SECRET_PREFIX = "BATCHFLEET_BROKER"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL passwords, named secrets and the given secret values replaced by ***."""
    # The patterns cost far more than these scans, and most text (a traceback) has neither.
    if "://" in text and "@" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<head>{MASK}", text)
    lower = text.lower()
    if any(word in lower for word in _NAME_WORDS):
        text = _NAMED_SECRET.sub(lambda m: m["head"] + MASK if m["secret"] != MASK else m[0], text)
    # Longest first, so a secret containing another one is masked whole.
    for value in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def url_passwords(text: str) -> list[str]:
    """Passwords in every scheme://user:password@host inside `text`, raw and decoded."""
    found: list[str] = []
    # Read whole, a list of URLs yields one span from the first password to the last '@'; read URL
    # by URL, each password alone. Both are kept: masking more never shows a secret.
    parts = _NEXT_URL.split(text)
    for part in [text, *parts] if len(parts) > 1 else [text]:
        for match in _URL_CREDENTIALS.finditer(part):
            raw = match["secret"]
            found.extend(dict.fromkeys((raw, unquote(raw))))
    return list(dict.fromkeys(found))


def secret_values_from_env(env: Mapping[str, str]) -> list[str]:
    """Secret values in an environment: keys, tokens, passwords, and passwords inside URLs."""
    found: list[str] = []
    for name, value in env.items():
        upper = name.upper()
        if upper in _SECRET_ENV or upper.endswith(_SECRET_ENV_SUFFIXES):
            found.append(value.strip())
        # BATCHFLEET_BROKER, proxies, endpoints: any variable may hold a URL with a password.
        found.extend(url_passwords(value))
    return [v for v in dict.fromkeys(found) if len(v) >= MIN_SECRET_LENGTH]


def is_own_secret(name: str) -> bool:
    """True for environment variables that hold (or lead to) batchfleet's own secrets."""
    upper = name.upper()
    return upper in _OWN_SECRET_ENV or upper.startswith(_OWN_SECRET_PREFIX)


def without_own_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """`env` minus batchfleet's own secrets: what user code, and the tools that build its
    environment, start with (they keep the AWS settings they may need)."""
    return {name: value for name, value in env.items() if not is_own_secret(name)}


class RedactingFilter(logging.Filter):
    """Masks secrets in every record passing through; install it on handlers.

    Handler filters see records from every logger, including propagated ones, which a
    filter on a logger would miss. The record is rewritten, never dropped.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Mask these values too (for example a key loaded after logging started)."""
        self._secrets.update(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A broken format call: the handler reports it through handleError as usual.
            return True
        clean = redact(message, self._secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Tracebacks quote exception messages, which often carry URLs.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


def mask_in_logs(*secrets: str) -> None:
    """Mask these values in every record the root logger's handlers write from now on (a key or
    password read from a file is in no environment variable the filters were built from)."""
    for handler in logging.getLogger().handlers:
        for filt in handler.filters:
            if isinstance(filt, RedactingFilter):
                filt.add(*secrets)


def install(handlers: Iterable[logging.Handler], secrets: Iterable[str] = ()) -> RedactingFilter:
    """Add one shared RedactingFilter to each handler and return it."""
    filt = RedactingFilter(secrets)
    for handler in handlers:
        handler.addFilter(filt)
    return filt
