"""Fixtures shared by more than one unit-test module (today: the test_deploy_* modules)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from tests.unit.deploy_helpers import WINDOWS, load_by_path


@pytest.fixture(scope="module")
def support() -> Iterator[types.ModuleType]:
    yield load_by_path("service_support", WINDOWS / "service_support.py")
    sys.modules.pop("service_support", None)
