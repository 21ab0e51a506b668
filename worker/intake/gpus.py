"""GPU devices of this node: CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`; or as `--gpus` names them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping

from common.errors import UsageError
from common.settings import RunSettings

_LISTED = re.compile(r"^GPU (\d+):", re.MULTILINE)
_NONE = {"", "-1", "none", "nodevfiles", "void"}
_DEVICE = re.compile(r"[A-Za-z0-9:_-]+")  # an index, or a GPU-/MIG- UUID


def detect_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The devices this process may use, as CUDA names them; [] when there are none."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return _split(visible)
    exe = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if exe is None:
        return []
    try:
        listed = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return _LISTED.findall(listed.stdout) if listed.returncode == 0 else []


def parse_gpus(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """`--gpus`: "auto" (detect), "none", or devices such as "0,1"."""
    if text.strip().lower() == "auto":
        return detect_gpus(environ)
    devices = _split(text)
    for device in devices:
        if not _DEVICE.fullmatch(device):
            raise UsageError(f"--gpus: {device!r} is not a GPU index or UUID", "use --gpus 0,1, auto or none")
    if len(set(devices)) != len(devices):
        raise UsageError(f"--gpus {text} names a device twice", "name each GPU once")
    return devices


def _split(text: str) -> list[str]:
    devices = [part.strip() for part in text.split(",")]
    if not devices or devices[0].lower() in _NONE:
        return []
    # CUDA stops at the first empty or invalid entry, and so do we.
    found: list[str] = []
    for device in devices:
        if device.lower() in _NONE:
            break
        found.append(device)
    return found


def process_count(node_processes: int | None, settings: RunSettings, gpus: list[str]) -> int:
    """--processes, else the job's process_count_per_node, else one per GPU (as Azure ML), else CPUs."""
    return node_processes or settings.process_count_per_node or len(gpus) or settings.processes()


def warm_count(node_processes: int | None, gpus: list[str]) -> int:
    """Children a node keeps interpreters ready for before it knows its next job (worker/run/standby.py)."""
    return node_processes or len(gpus) or os.cpu_count() or 1


def device_for(process: str, gpus: list[str]) -> str | None:
    """The one device a child gets: process001 the first GPU, and round the list again past the end."""
    if not gpus:
        return None
    number = int(process.removeprefix("process") or "1")
    return gpus[(number - 1) % len(gpus)]
