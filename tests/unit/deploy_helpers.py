"""deploy/ paths and helpers shared by the test_deploy_* modules."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import types
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SYSTEMD = DEPLOY / "systemd"
WINDOWS = DEPLOY / "windows"
COMPOSE = DEPLOY / "compose"

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and executables")


def load_by_path(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # pydantic resolves the module's annotations through sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def wait_for_text(path: Path, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")
