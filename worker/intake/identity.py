"""Who a worker node is: its node id (from a template), the machine it runs on, and a session token.

Two live nodes must never share an id (their files would collide). Cloned machines share a host
name, so ids can name the machine id too: `{host}`, `{machine}` (8 hex digits of
/etc/machine-id, or of MachineGuid on Windows) and `{pid}` are filled in. Every node process also
draws a random session token: the coordinator refuses a second live node with the same id, and
every file a node writes carries the token, so two nodes never write the same file.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import sys
import uuid
from pathlib import Path

from common.errors import UsageError

DEFAULT_NODE_ID = "{host}-{machine}-{pid}"
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def machine_id() -> str:
    """8 hex digits naming this machine: from the OS's machine id, else the network card's address."""
    raw = _os_machine_id() or f"{uuid.getnode():012x}"
    return hashlib.sha256(raw.encode()).hexdigest()[:8]  # hashed: the raw id is meant to stay private


def _os_machine_id() -> str:
    for path in _MACHINE_ID_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    if sys.platform == "win32":  # pragma: no cover - Windows only
        try:
            import winreg

            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography") as key:
                return str(winreg.QueryValueEx(key, "MachineGuid")[0])
        except OSError:
            return ""
    return ""


def node_id_from(template: str | None) -> str:
    """The node id: `template` (default {host}-{machine}-{pid}) with its placeholders filled in."""
    template = template or DEFAULT_NODE_ID
    values = {"host": socket.gethostname().split(".")[0] or "host", "pid": str(os.getpid())}
    if "{machine}" in template:
        values["machine"] = machine_id()
    try:
        node_id = template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"node id '{template}' has an unknown placeholder ({exc})", "use {host}, {machine} and {pid}"
        ) from None
    if not _VALID.fullmatch(node_id):
        raise UsageError(
            f"node id '{node_id}' may only hold letters, digits, '.', '_' and '-' (up to 128)",
            "for example --node-id {host}-{machine}-1",
        )
    return node_id


def new_session() -> str:
    """A random token for one node process: 8 hex digits."""
    return secrets.token_hex(4)


def host_label() -> str:
    """How this process names where it runs, in messages about duplicate node ids."""
    return f"{socket.gethostname()} (pid {os.getpid()})"
