"""Object keys that would land on one local file on a worker are refused at planning, naming both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import run_cli
from tests.integration.fault_helpers import done_files, fleet_run_args, make_code, one_error_line
from tests.servers import MotoS3

pytestmark = pytest.mark.security


@pytest.mark.parametrize(
    ("keys", "pair"),
    [
        (["in/a/b.txt", "in/a\\b.txt", "in/c.txt"], ("a/b.txt", "a\\b.txt")),
        (["in/a//b.txt", "in/a/b.txt", "in/c.txt"], ("a/b.txt", "a//b.txt")),
    ],
)
def test_keys_that_collide_locally_are_refused_at_planning(
    tmp_path: Path, signed_fleet: dict[str, Any], s3: MotoS3, keys: list[str], pair: tuple[str, str]
) -> None:
    """Planned, one would overwrite the other on a node while both counted as succeeded."""
    fleet = signed_fleet
    bucket = fleet["bucket"].removeprefix("s3://")
    for key in keys:
        s3.client().put_object(Bucket=bucket, Key=key, Body=key.encode())
    spec = make_code(tmp_path / "code")
    result = run_cli("run", *fleet_run_args(spec, fleet), env=fleet["env"], timeout=120)
    line = one_error_line(result)
    assert result.returncode == 2, line
    assert all(repr(key) in line for key in pair), line
    assert "would land on one local file" in line, line
    assert done_files(s3, fleet["output"]) == set()
