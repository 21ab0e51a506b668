"""Parse approximate data sizes such as "10MB" (1024-based)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "kb": 1024, "k": 1024, "mb": 1024**2, "m": 1024**2, "gb": 1024**3, "g": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Return the number of bytes in `text`; raise ValueError naming the problem."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size such as '1MB' or '512KB'")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(f"{text!r} has unknown unit {match.group(2)!r}; use B, KB, MB or GB")
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"{text!r} must be more than zero bytes")
    return size


def is_size_text(value: object) -> bool:
    """True when `value` is a string with a unit, like "10MB" (not a bare count)."""
    return isinstance(value, str) and bool(_SIZE.match(value)) and not value.strip().isdigit()
