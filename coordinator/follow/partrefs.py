"""The first committed part of every batch, in fixed-size arrays (21 bytes a batch).

A part reference is `<file>#<offset>+<length>` (common/parts/frames.py). Local segments are
shared by thousands of frames, so their paths are interned; on object storage each frame is its
own object named `<folder>/<batch:09d>.<attempt>.part`, so only the folder is interned and the
name is rebuilt from the batch id and attempt. Anything else is interned whole.
"""

from __future__ import annotations

import re
from array import array

from common.parts.frames import parse_ref

_OBJECT_NAME = re.compile(r"(?P<folder>.*)/(?P<batch>\d{9,})\.(?P<attempt>\d{1,3})\.part")
NONE = -1


class PartRefs:
    """batch id -> (file, offset, length) of its first committed part; empty until set."""

    def __init__(self, batches: int) -> None:
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        # >= 0: a file in _names; <= -2: the folder -(code + 2) of a per-batch object; -1: no part.
        self._file = array("i", [NONE]) * batches
        self._attempt = bytearray(batches)
        self._offset = array("q", [0]) * batches
        self._length = array("q", [0]) * batches

    def _intern(self, name: str) -> int:
        code = self._index.get(name)
        if code is None:
            code = self._index[name] = len(self._names)
            self._names.append(name)
        return code

    def set(self, batch_id: int, ref: str) -> None:
        uri, offset, length = parse_ref(ref)
        match = _OBJECT_NAME.fullmatch(uri) if uri.endswith(".part") else None
        attempt = int(match["attempt"]) if match else 0
        if match and match["batch"] == f"{batch_id:09d}" and 0 < attempt < 256:
            self._file[batch_id] = -(self._intern(match["folder"]) + 2)
            self._attempt[batch_id] = attempt
        else:
            self._file[batch_id] = self._intern(uri)
        self._offset[batch_id] = offset
        self._length[batch_id] = length

    def span(self, batch_id: int) -> tuple[str, int, int] | None:
        """(file, offset, length) of the batch's part, or None when it has none."""
        code = self._file[batch_id]
        if code == NONE:
            return None
        if code >= 0:
            uri = self._names[code]
        else:
            uri = f"{self._names[-code - 2]}/{batch_id:09d}.{self._attempt[batch_id]}.part"
        return uri, self._offset[batch_id], self._length[batch_id]

    def get(self, batch_id: int) -> str | None:
        """The reference string (as reported) of the batch's part."""
        found = self.span(batch_id)
        return None if found is None else f"{found[0]}#{found[1]}+{found[2]}"
