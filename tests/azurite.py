"""Azurite (Azure Storage's emulator, from npm) on a free port, for the wasbs:// and abfss:// tests."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.servers import ServerUnavailable, free_port, stop_process, wait_port

ACCOUNT = "devstoreaccount1"
# Azurite's fixed development account key, published in its documentation: not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Azurite:
    """The blob service only, in memory, with telemetry off (this machine talks to no one)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.log = base / "azurite.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def launch(self, timeout: float = 60) -> None:
        exe = shutil.which("azurite-blob")
        if exe is None:
            raise ServerUnavailable("azurite is not installed (npm install -g azurite)")
        args = [exe, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence",
                "--disableTelemetry", "--silent", "--skipApiVersionCheck", "--loose"]  # fmt: skip
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                args, cwd=self.base, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_port(self.port, timeout, self._proc, self.log)

    def client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def make_container(self) -> str:
        """A fresh container; its wasbs:// URI."""
        name = f"bf-{uuid.uuid4().hex[:12]}"
        self.client().create_container(name)
        return f"wasbs://{name}@{ACCOUNT}.blob.core.windows.net"

    def close(self) -> None:
        stop_process(self._proc, grace=5)
