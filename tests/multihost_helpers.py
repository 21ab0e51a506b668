"""A fleet spread over "hosts" on one machine: each worker with its own HOME, TMPDIR and work root,
reaching the coordinator only through the broker and the store; and a wheel built on the spot, so
a job's environment installs without a package registry."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.fleet_helpers import start_worker


def build_wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A pure-Python wheel holding one module `<name>.py`: no build backend, no network."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: batchfleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@dataclass
class Host:
    """One worker's machine: its own home, temp and work folders."""

    name: str
    root: Path

    @property
    def work(self) -> Path:
        return self.root / f"work-{self.name}"

    def env(self, base: dict[str, str], wheels: Path) -> dict[str, str]:
        home, tmp = self.root / "home", self.root / "tmp"
        for folder in (home, tmp):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            **base,
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "UV_CACHE_DIR": str(home / ".cache" / "uv"),
            # The job's packages come from the wheels folder only: no registry in CI.
            "UV_FIND_LINKS": str(wheels),
            "UV_OFFLINE": "1",
            "PIP_FIND_LINKS": str(wheels),
            "PIP_NO_INDEX": "1",
        }

    def start(self, url: str, base: dict[str, str], wheels: Path) -> subprocess.Popen[bytes]:
        # start_worker puts the work root at <root>/work-<name>, beside this host's home and temp.
        return start_worker(url, self.name, self.root, self.env(base, wheels), 2)


def python_pin() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
