"""No password or key reaches a log line through redact() and RedactingFilter."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from common.redact import RedactingFilter, install, redact, secret_values_from_env, url_passwords

CASES = [
    ("amqp://user:pass@host:5672/vhost", "amqp://user:***@host:5672/vhost"),
    ("amqps://batchfleet:s3cr3t@broker.internal:5671/", "amqps://batchfleet:***@broker.internal:5671/"),
    ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@minio/bucket", "s3://AKIAEXAMPLE:***@minio/bucket"),
    ("http://u:p@proxy:3128", "http://u:***@proxy:3128"),
    ("https://u:p%40ss@h/x", "https://u:***@h/x"),
    ("amqps://u:p@ss@host:5671", "amqps://u:***@host:5671"),
    ("amqp://u::colon:pw@h", "amqp://u:***@h"),
    ("amqp://:onlypass@h", "amqp://:***@h"),
    ("broker='amqp://u:pw@h' store=\"s3://b\"", "broker='amqp://u:***@h' store=\"s3://b\""),
    ("see <amqp://u:pw@h>, mail a@b.c", "see <amqp://u:***@h>, mail a@b.c"),
    ("first amqp://a:one@h1 then amqp://b:two@h2", "first amqp://a:***@h1 then amqp://b:***@h2"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key=***"),
    ("AWS_SECRET_ACCESS_KEY = wJalrXUtnFEMI/K7MDENG rest", "AWS_SECRET_ACCESS_KEY = *** rest"),
    ("{'aws_secret_access_key': 'abc+/def'}", "{'aws_secret_access_key': '***'}"),
    (
        '{"SecretAccessKey": "abc", "AccessKeyId": "AKIA1"}',
        '{"SecretAccessKey": "***", "AccessKeyId": "AKIA1"}',
    ),
    ("aws_session_token: FQoGZXIvYXdzE", "aws_session_token: ***"),
    ("BATCHFLEET_SIGNING_KEY=topsecretkeyvalue", "BATCHFLEET_SIGNING_KEY=***"),
    ("RABBITMQ_PASSWORD=hunter22 next", "RABBITMQ_PASSWORD=*** next"),
    (
        "https://b.s3/k?X-Amz-Signature=abcdef&X-Amz-Security-Token=tok",
        "https://b.s3/k?X-Amz-Signature=***&X-Amz-Security-Token=***",
    ),
]

UNCHANGED = [
    "http://host:8080/path",
    "amqp://guest@localhost/",
    "s3://bucket/prefix/file.csv",
    "BATCHFLEET_SIGNING_KEY_FILE=/etc/batchfleet/signing.key",
    "batch 7 of job 3f2a committed in 1.2 s",
    "C:\\data\\x.csv",
    "user@example.com wrote 3 rows",
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", UNCHANGED)
def test_redact_leaves_plain_text(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(("text", "_expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_redact_is_idempotent(text: str, _expected: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_known_secret_values_are_masked() -> None:
    text = "token abcd1234 and key XYZ-secret-XYZ in a sentence; short 'ab' kept"
    got = redact(text, ["abcd1234", "XYZ-secret-XYZ", "ab"])
    assert got == "token *** and key *** in a sentence; short 'ab' kept"


def test_longest_secret_masked_first() -> None:
    assert redact("value=longsecret!", ["longsecret!", "secret"]) == "value=***"


def test_url_passwords() -> None:
    assert url_passwords("amqp://u:p%40ss@h and s3://k:raw@b") == ["p%40ss", "p@ss", "raw"]
    assert url_passwords("amqp://u@h") == []


def test_url_passwords_of_a_cluster_list_include_each_node_password() -> None:
    """BATCHFLEET_BROKER may list a cluster's nodes, comma-separated, each with its own password."""
    found = url_passwords("amqp://u:pw-one@h1:5672/,amqps://u:pw%2Ftwo@h2:5671/")
    assert {"pw-one", "pw%2Ftwo", "pw/two"} <= set(found)
    masked = redact("token pw-one and pw/two", found)
    assert "pw-one" not in masked and "pw/two" not in masked


def test_secret_values_from_env() -> None:
    env = {
        "BATCHFLEET_BROKER": "amqps://batchfleet:br0ker%2Fpw@rabbit:5671/",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
        "AWS_SESSION_TOKEN": "FQoGZXIvYXdz",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "BATCHFLEET_SIGNING_KEY": "0123456789abcdef",
        "HTTPS_PROXY": "http://me:proxypw@proxy:3128",
        "MINIO_ROOT_PASSWORD": "miniopass",
        "GITHUB_TOKEN": "ghp_x",
        "SHORT_PASSWORD": "ab",
        "HOME": "/root",
        "PATH": "/usr/bin",
    }
    found = secret_values_from_env(env)
    for value in [
        "br0ker%2Fpw",
        "br0ker/pw",
        "wJalrXUtnFEMI",
        "FQoGZXIvYXdz",
        "0123456789abcdef",
        "proxypw",
        "miniopass",
        "ghp_x",
    ]:
        assert value in found
    for value in ["AKIAEXAMPLE", "/root", "/usr/bin", "ab"]:
        assert value not in found


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, RedactingFilter]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    filt = install([handler], ["wJalrXUtnFEMI"])
    logger = logging.getLogger("test_redact.logged")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream, filt
    logger.removeHandler(handler)


def test_filter_masks_args(logged: tuple[logging.Logger, io.StringIO, RedactingFilter]) -> None:
    logger, stream, _ = logged
    logger.info("connecting to %s with %s", "amqp://u:pw1234@h/", {"secret": "wJalrXUtnFEMI"})
    out = stream.getvalue()
    assert "pw1234" not in out and "wJalrXUtnFEMI" not in out
    assert "amqp://u:***@h/" in out and "{'secret': '***'}" in out


def test_filter_masks_tracebacks(logged: tuple[logging.Logger, io.StringIO, RedactingFilter]) -> None:
    logger, stream, _ = logged
    try:
        raise ConnectionError("cannot reach amqps://u:tbsecret@broker:5671/")
    except ConnectionError:
        logger.exception("broker down")
    out = stream.getvalue()
    assert "tbsecret" not in out
    assert "Traceback" in out and "amqps://u:***@broker" in out


def test_filter_masks_stack_info(logged: tuple[logging.Logger, io.StringIO, RedactingFilter]) -> None:
    logger, stream, filt = logged
    filt.add("stack-secret-value")

    logger.warning("here", stack_info=True)
    assert "Stack (most recent call last)" in stream.getvalue()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None, sinfo="at stack-secret-value")
    filt.filter(record)
    assert record.stack_info == "at ***"


def test_filter_added_secret(logged: tuple[logging.Logger, io.StringIO, RedactingFilter]) -> None:
    logger, stream, filt = logged
    filt.add("late-key-0123")
    logger.info("key is %s", "late-key-0123")
    assert stream.getvalue().strip().endswith("key is ***")


def test_filter_keeps_clean_records_untouched() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "done %d of %d", (3, 4), None)
    assert RedactingFilter().filter(record) is True
    assert record.msg == "done %d of %d" and record.args == (3, 4)


def test_filter_tolerates_broken_format_calls() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("not a number",), None)
    assert RedactingFilter().filter(record) is True


def test_filter_on_handler_sees_child_loggers() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install([handler])
    parent = logging.getLogger("test_redact.parent")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    parent.propagate = False
    try:
        logging.getLogger("test_redact.parent.child.deep").info("url %s", "s3://k:childpw@minio/b")
    finally:
        parent.removeHandler(handler)
    assert "childpw" not in stream.getvalue() and "s3://k:***@minio/b" in stream.getvalue()
