"""Storage by URI: local paths and s3://bucket/prefix behind one interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.storage.base import NameRun, ObjectInfo, Storage, StoreUnreachable, is_remote, join_uri, uri_within
from common.storage.registry import open_storage

if TYPE_CHECKING:
    from common.storage.options import StorageOptions

__all__ = [
    "NameRun",
    "ObjectInfo",
    "Storage",
    "StorageOptions",
    "StoreUnreachable",
    "is_remote",
    "join_uri",
    "open_storage",
    "uri_within",
]


def __getattr__(name: str) -> Any:
    # Loaded on first use: a worker's child process reads local files without pydantic.
    if name == "StorageOptions":
        from common.storage.options import StorageOptions

        return StorageOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
