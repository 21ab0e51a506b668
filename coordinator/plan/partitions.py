"""Partitioned inputs: one mini-batch per distinct key combination.

Files are partitioned by folder levels, either by position from a declared layout such as
``{country}/{state}/*`` or hive style (``country=x/state=y/``). Tables are partitioned by
column values (see coordinator/plan/tables.py); the grouping helper here serves both.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple
from urllib.parse import unquote

from common.errors import InputError, UsageError
from common.messages import Item
from common.storage.base import ObjectInfo

logger = logging.getLogger(__name__)


class BatchPlan(NamedTuple):
    """One planned mini-batch; the planner numbers them in the order they are yielded."""

    items: list[Item]
    partition: dict[str, str] | None


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _layout_segments(layout: str) -> list[str]:
    text = layout.strip().strip("/")
    if not text:
        raise UsageError("partition_layout is empty", "use a layout such as '{country}/{state}/*'")
    segments = text.split("/")
    if any(not seg for seg in segments):
        raise UsageError(f"partition_layout {layout!r} has an empty folder level", "remove the doubled '/'")
    return segments


def parse_layout(layout: str) -> list[str]:
    """The keys of a layout such as ``{country}/{state}/*``, in order; UsageError when malformed."""
    keys: list[str] = []
    for segment in _layout_segments(layout):
        for name in _PLACEHOLDER.findall(segment):
            if not name.isidentifier():
                raise UsageError(
                    f"partition_layout {layout!r} has key {{{name}}} that is not a name",
                    "keys are letters, digits and '_', such as {country}",
                )
            if name in keys:
                raise UsageError(f"partition_layout {layout!r} names key {{{name}}} twice")
            keys.append(name)
        if "{" in _PLACEHOLDER.sub("", segment) or "}" in _PLACEHOLDER.sub("", segment):
            raise UsageError(f"partition_layout {layout!r} has an unbalanced brace in {segment!r}")
    if not keys:
        raise UsageError(
            f"partition_layout {layout!r} names no keys",
            "mark folder levels as keys, e.g. '{country}/{state}/*'",
        )
    return keys


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(segment):
        out.append(_glob_regex(segment[pos : match.start()]))
        out.append(f"(?P<{match.group(1)}>[^/]+?)")
        pos = match.end()
    out.append(_glob_regex(segment[pos:]))
    return "".join(out)


def _glob_regex(text: str) -> str:
    return "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in text)


def _layout_regex(layout: str) -> re.Pattern[str]:
    # A layout matches the leading folder levels; deeper files belong to the same partition.
    body = "/".join(_segment_regex(seg) for seg in _layout_segments(layout))
    return re.compile(f"^{body}(?:/|$)")


def _streamable(layout: str | None, keys: list[str], first_rel: str | None) -> bool:
    """True when sorted listing order keeps each key combination contiguous.

    That holds when the leading folder levels hold exactly the chosen keys and no wildcard,
    so each combination is one path prefix, and a prefix is one contiguous run of a sorted listing.
    """
    if layout is not None:
        levels = _layout_segments(layout)
    elif first_rel is not None:
        folders = first_rel.split("/")[:-1]
        levels = ["{" + seg.split("=", 1)[0] + "}" if "=" in seg else seg for seg in folders]
    else:
        return False
    covered: set[str] = set()
    for segment in levels:
        names = _PLACEHOLDER.findall(segment)
        if "*" in segment or "?" in segment or not names or not set(names) <= set(keys):
            return False
        covered.update(names)
        if covered == set(keys):
            return True
    return False


def _hive_values(rel: str, keys: list[str]) -> tuple[str, ...]:
    found: dict[str, str] = {}
    for segment in rel.split("/")[:-1]:
        if "=" in segment:
            key, value = segment.split("=", 1)
            found.setdefault(key, unquote(value))
    missing = [k for k in keys if k not in found]
    if missing:
        have = ", ".join(found) or "none"
        raise UsageError(
            f"partition key {missing[0]!r} is not a hive-style folder ({missing[0]}=VALUE/) in {rel}; "
            f"keys found there: {have}",
            "set partition_layout such as '{country}/{state}/*' for plain folder names",
        )
    return tuple(found[k] for k in keys)


def key_values(rel: str, keys: list[str], layout: str | None) -> tuple[str, ...]:
    """The values of `keys` for one file path relative to the input root."""
    if layout is None:
        return _hive_values(rel, keys)
    match = _layout_regex(layout).match(rel)
    if match is None:
        raise UsageError(
            f"input file {rel} does not fit partition_layout {layout!r}",
            "fix the layout or move files that are not partitioned out of the input",
        )
    return tuple(match.group(k) for k in keys)


def check_keys(keys: list[str], layout: str | None) -> None:
    """UsageError when a key is not in the layout (hive keys are checked per file)."""
    if layout is None:
        return
    names = parse_layout(layout)
    for key in keys:
        if key not in names:
            raise UsageError(
                f"partition key {key!r} is not in partition_layout {layout!r}; its keys are {', '.join(names)}"
            )


def partition_files(infos: Iterable[ObjectInfo], keys: list[str], layout: str | None) -> Iterator[BatchPlan]:
    """One batch of files per distinct key combination.

    Streams (one group in memory) when the keys are the leading folder levels, because the
    listing is sorted by path; otherwise every file reference is held until the listing ends,
    then the groups come out in sorted key order.
    """
    check_keys(keys, layout)
    stream = iter(infos)
    first = next(stream, None)
    if first is None:
        return
    pairs = ((key_values(info.rel, keys, layout), _file_item(info)) for info in itertools.chain([first], stream))
    if _streamable(layout, keys, first.rel):
        yield from _group_runs(pairs, keys)
    else:
        logger.info("partition keys %s are not the leading folder levels; grouping in memory", keys)
        yield from group_by_values(((item, [values]) for values, item in pairs), keys)


def _file_item(info: ObjectInfo) -> Item:
    return Item(uri=info.uri, name=info.rel, size=info.size)


def _group_runs(pairs: Iterable[tuple[tuple[str, ...], Item]], keys: list[str]) -> Iterator[BatchPlan]:
    current: tuple[str, ...] | None = None
    items: list[Item] = []
    done: set[tuple[str, ...]] = set()
    for values, item in pairs:
        if values != current:
            if current is not None:
                done.add(current)
                yield BatchPlan(items, dict(zip(keys, current, strict=True)))
            if values in done:
                raise InputError(
                    f"input listing is not grouped by partition keys {keys}: {item.name} comes after "
                    "another partition started",
                    "list the keys as the leading folder levels or set partition_layout",
                )
            current, items = values, []
        items.append(item)
    if current is not None:
        yield BatchPlan(items, dict(zip(keys, current, strict=True)))


def group_by_values(units: Iterable[tuple[Item, Iterable[tuple[str, ...]]]], keys: list[str]) -> Iterator[BatchPlan]:
    """Accumulate units under every key combination they hold; yield groups in sorted key order.

    A unit holding several combinations (a table range with many key values) joins each group;
    the reader filters rows by the batch's partition values.
    """
    groups: dict[tuple[str, ...], list[Item]] = {}
    for item, combos in units:
        for values in dict.fromkeys(combos):
            groups.setdefault(values, []).append(item)
    for values in sorted(groups):
        yield BatchPlan(groups[values], dict(zip(keys, values, strict=True)))
