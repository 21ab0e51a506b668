"""`batchfleet worker --check` is a health check: it reports, and creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import StorageError
from common.storage.local import LocalStorage


def test_a_missing_local_store_is_reported_not_created(tmp_path: Path) -> None:
    store = tmp_path / "a" / "b" / "store"
    assert LocalStorage().check_reachable(str(store)) == f"not created yet ({tmp_path} is writable)"
    assert not (tmp_path / "a").exists()
    store.mkdir(parents=True)
    assert LocalStorage().check_reachable(str(store)) == "writable"
    assert list(store.iterdir()) == []  # no probe file left, none written


def test_a_store_under_a_file_is_unhealthy(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not writable"):
        LocalStorage().check_reachable(str(tmp_path / "file" / "store"))


def test_a_read_only_store_is_unhealthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "access", lambda *_args: False)  # as for a user without write permission
    with pytest.raises(StorageError, match="read-only"):
        LocalStorage().check_reachable(str(tmp_path / "store"))
