"""URI scheme -> storage implementation; the one module that knows them all.

Implementations are imported on first use: a worker's child reading local files never loads boto3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from common.errors import UsageError
from common.storage.base import Storage

if TYPE_CHECKING:
    from common.storage.options import StorageOptions

LOCAL = "common.storage.local:LocalStorage"
# scheme -> "module:class", built with StorageOptions
SCHEMES = {
    "s3": "common.storage.s3:S3Storage",
    "https": "common.storage.http:HttpStorage",
    "http": "common.storage.http:HttpStorage",
    "wasbs": "common.storage.azure_blob:AzureBlobStorage",
    "wasb": "common.storage.azure_blob:AzureBlobStorage",
    "abfss": "common.storage.azure_blob:AzureBlobStorage",
    "abfs": "common.storage.azure_blob:AzureBlobStorage",
}


def _load(target: str) -> type[Storage]:
    module, _, name = target.partition(":")
    cls: type[Storage] = getattr(importlib.import_module(module), name)
    return cls


def open_storage(uri: str, options: StorageOptions | None = None) -> Storage:
    """The storage that serves `uri`: a local path, or a URI whose scheme is registered."""
    if "://" not in uri:
        return _load(LOCAL)()
    scheme = uri.split("://", 1)[0]
    target = SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise UsageError(
            f"unsupported location scheme {scheme!r} in {uri}", f"use a local path or {known}bucket/prefix"
        )
    from common.storage.options import StorageOptions

    return _load(target)(options or StorageOptions())  # type: ignore[call-arg]
