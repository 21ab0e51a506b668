"""Join untrusted names (object keys, partition values) under a folder without escaping it.

Names come from listings and messages, so they are input: `../../etc/x`, `/abs`, `C:\\x`,
`\\\\server\\share` or `a\\..\\..\\x` must not reach outside the worker's temp or output
folders. The rules are the same on every OS, because a fleet mixes Linux and Windows nodes
and a batch must not succeed on one and write outside its folder on the other.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PureWindowsPath
from urllib.parse import quote

from common.errors import BatchfleetError

# Names Windows maps to devices in any folder, with or without an extension.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{dev}{n}" for dev in ("com", "lpt") for n in [*"123456789", "¹", "²", "³"]}
)
_DRIVE = re.compile(r"^[A-Za-z]:")
_SPLIT = re.compile(r"[\\/]")
# Characters kept as-is in a component; everything else is percent-encoded.
_COMPONENT_SAFE = " -_.~+=,@"
_MAX_COMPONENT = 200


class UnsafePathError(BatchfleetError):
    """An object key or partition value would land outside its folder."""


def _refuse(rel: str, why: str) -> UnsafePathError:
    # repr() keeps control characters and NUL bytes from breaking the one-line message.
    return UnsafePathError(f"unsafe path {rel!r}: {why}", "object keys and partition values must be relative")


def _segments(rel: str) -> list[str]:
    """The checked parts of `rel`, split on both separators."""
    if not rel:
        raise _refuse(rel, "it is empty")
    if "\0" in rel:
        raise _refuse(rel, "it contains a NUL byte")
    if rel[0] in "/\\":
        raise _refuse(rel, "it is absolute or a UNC path")
    if _DRIVE.match(rel) or PureWindowsPath(rel).drive:
        raise _refuse(rel, "it names a drive")
    parts = []
    for seg in _SPLIT.split(rel):
        if seg in ("", "."):
            continue
        if not seg.rstrip(" ."):
            # Windows drops trailing dots and spaces, so '...' or '.. ' can act as '..'.
            raise _refuse(rel, "it climbs out of its folder with '..'")
        if _DRIVE.match(seg):
            raise _refuse(rel, "it names a drive")
        if seg.split(".", 1)[0].rstrip(" ").lower() in _RESERVED:
            raise _refuse(rel, f"{seg!r} is a device name on Windows")
        parts.append(seg)
    if not parts:
        raise _refuse(rel, "it names no file")
    return parts


def safe_join(root: Path, rel: str) -> Path:
    """`root` joined with the relative name `rel`, guaranteed to stay inside `root`.

    Both '/' and '\\' separate parts. Refused with UnsafePathError: empty names, NUL bytes,
    absolute and UNC paths, drive letters, '..' (also as '...' or '.. '), Windows device
    names, and names that a symlink inside `root` would carry outside it.
    """
    parts = _segments(rel)
    base = root.resolve()
    target = base.joinpath(*parts)
    if not target.resolve().is_relative_to(base):
        raise _refuse(rel, f"it resolves outside {root}")
    return target


def local_key(rel: str) -> str:
    """The relative path `rel` lands on under `safe_join`: its parts joined by '/'. Distinct object
    keys with one local key (`a/b`, `a\\b`, `a//b`, `./a/b`) would overwrite each other on a node."""
    return "/".join(_segments(rel))


def safe_component(value: str) -> str:
    """`value` as one folder name: the same name on every OS, distinct values stay distinct.

    Separators, drive colons, control and other unsafe characters are percent-encoded
    (`2024/01` -> `2024%2F01`); '.' and '..' and Windows device names get their first
    character encoded; the empty value becomes '%'. Very long values keep a prefix and a hash.
    """
    if value == "":
        # A lone '%' is never produced by percent-encoding, so it cannot collide.
        return "%"
    name = quote(value, safe=_COMPONENT_SAFE)
    if name.split(".", 1)[0].rstrip(" ").lower() in _RESERVED or not name.rstrip(" ."):
        name = f"%{ord(name[0]):02X}{name[1:]}"
    # Windows strips trailing dots and spaces, which would merge 'a' and 'a.'.
    if name[-1] in " .":
        name = f"{name[:-1]}%{ord(name[-1]):02X}"
    if len(name.encode()) > _MAX_COMPONENT:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = f"{name[: _MAX_COMPONENT - 18]}~{digest}"
    return name
