"""Node ids unique in a fleet: templates with the host and machine id, session tokens."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from common.errors import UsageError
from worker.intake import identity
from worker.intake.identity import machine_id, new_session, node_id_from


def test_the_default_id_names_host_machine_and_process() -> None:
    host = socket.gethostname().split(".")[0]
    assert node_id_from(None) == f"{host}-{machine_id()}-{os.getpid()}"
    assert re.fullmatch(r"[0-9a-f]{8}", machine_id())


def test_templates_are_filled_in() -> None:
    assert node_id_from("gpu-{machine}-2") == f"gpu-{machine_id()}-2"
    assert node_id_from("plain-id") == "plain-id"


def test_cloned_machines_differ_by_machine_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = []
    for number in (1, 2):
        path = tmp_path / f"machine-id-{number}"
        path.write_text(f"{number:032x}\n")
        monkeypatch.setattr(identity, "_MACHINE_ID_FILES", (path,))
        ids.append(node_id_from("{host}-{machine}-1"))
    assert ids[0] != ids[1]  # same host name (a clone), different machine ids


@pytest.mark.parametrize("template", ["{hostname}-1", "a/b", "../x", "x" * 200, "{0}"])
def test_bad_ids_are_usage_errors(template: str) -> None:
    with pytest.raises(UsageError) as caught:
        node_id_from(template)
    assert "node id" in caught.value.line()


def test_sessions_are_random() -> None:
    tokens = {new_session() for _ in range(50)}
    assert len(tokens) == 50 and all(re.fullmatch(r"[0-9a-f]{8}", t) for t in tokens)
