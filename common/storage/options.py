"""How to reach S3-compatible storage (a model of its own: local-only processes never load pydantic)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StorageOptions(BaseModel):
    """How to reach S3-compatible storage; None means boto3's own lookup (env, profile)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool | None = None
    ca_bundle: str | None = None
    profile: str | None = None
