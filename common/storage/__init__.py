"""Storage by URI: local paths and s3://bucket/prefix behind one interface."""

from common.storage.base import ObjectInfo, Storage, StorageOptions, is_remote, join_uri, open_storage

__all__ = ["ObjectInfo", "Storage", "StorageOptions", "is_remote", "join_uri", "open_storage"]
