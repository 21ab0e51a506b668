"""Azure ML data references mapped onto locations batchfleet reads: `azureml://datastores/NAME/paths/P`
through `--datastore NAME=URI`, and `azureml:NAME:VERSION` data assets through a local folder of
data asset YAML files (`--data-assets FOLDER`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import SpecError, UsageError
from common.storage import StorageOptions, join_uri

_DATASTORE = re.compile(r"azureml://(?:subscriptions/[^/]+/resourcegroups/[^/]+/workspaces/[^/]+/)?"
                        r"datastores/([^/]+)/paths/?(.*)", re.IGNORECASE)  # fmt: skip
_ASSET = re.compile(r"azureml:(?!//)([\w.-]+)(?::([\w.-]+)|@(latest))?")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def parse_datastores(values: list[str] | None) -> dict[str, str]:
    """NAME=URI pairs from `--datastore`; a local URI is made absolute."""
    found: dict[str, str] = {}
    for text in values or []:
        name, sep, uri = text.partition("=")
        name, uri = name.strip(), uri.strip()
        if not sep or not _NAME.fullmatch(name) or not uri:
            raise UsageError(f"--datastore expects NAME=URI, got '{text}'", "for example --datastore blobs=s3://bucket")
        if name in found:
            raise UsageError(f"--datastore {name} is given twice", "map each datastore once")
        found[name] = uri if "://" in uri else os.path.abspath(uri)
    return found


@dataclass(frozen=True)
class DataMap:
    """Where Azure ML's data references point on this fleet."""

    datastores: Mapping[str, str] = field(default_factory=dict)
    assets: Path | None = None
    storage: StorageOptions = field(default_factory=StorageOptions)  # to read MLTable files

    def locate(self, uri: str, what: str) -> str:
        """`uri` with an Azure ML reference replaced by the location it stands for."""
        if not uri.startswith("azureml:"):
            return uri
        store = _DATASTORE.fullmatch(uri)
        if store is not None:
            name, rest = store.group(1), store.group(2)
            if name not in self.datastores:
                mapped = ", ".join(self.datastores) or "none"
                raise UsageError(
                    f"{what} is on datastore '{name}', which is not mapped (mapped: {mapped})",
                    f"pass --datastore {name}=PATH_OR_S3_URI",
                )
            return join_uri(self.datastores[name], *[p for p in rest.split("/") if p])
        asset = _ASSET.fullmatch(uri)
        if asset is None:
            raise UsageError(
                f"{what} is '{uri}', an Azure ML reference batchfleet cannot read",
                "use azureml://datastores/NAME/paths/..., azureml:NAME:VERSION, a path or a URI",
            )
        return self._asset(asset.group(1), asset.group(2), what)

    def _asset(self, name: str, version: str | None, what: str) -> str:
        if self.assets is None:
            raise UsageError(
                f"{what} is the Azure ML data asset '{name}', and no data asset folder is given",
                "pass --data-assets FOLDER (data asset YAML files) or a path instead",
            )
        versions = _asset_files(self.assets).get(name, {})
        if not versions:
            raise UsageError(f"{what}: no data asset '{name}' in {self.assets}", "check the name, or add its YAML file")
        chosen = version or max(versions, key=_version_key)
        if chosen not in versions:
            raise UsageError(f"{what}: data asset '{name}' has no version {chosen} (has {', '.join(sorted(versions))})")
        source, path = versions[chosen]
        located = path if "://" in path or path.startswith("azureml:") else os.path.abspath(source.parent / path)
        return self.locate(located, what)


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    parts = version.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (float("inf"), version)


def _asset_files(folder: Path) -> dict[str, dict[str, tuple[Path, str]]]:
    """name -> version -> (file, path) for each data asset YAML in `folder` (not recursive)."""
    from coordinator.spec.validation import read_mapping

    if not folder.is_dir():
        raise UsageError(f"data asset folder {folder} does not exist", "pass --data-assets FOLDER")
    found: dict[str, dict[str, tuple[Path, str]]] = {}
    for source in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        doc = read_mapping(source)
        name, version, path = doc.get("name"), doc.get("version"), doc.get("path")
        if not isinstance(name, str) or not isinstance(path, str):
            raise SpecError(f"{source.name}: a data asset needs name: and path:")
        found.setdefault(name, {})[str(version if version is not None else "1")] = (source, path)
    return found
