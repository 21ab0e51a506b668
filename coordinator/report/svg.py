"""Small SVG building blocks for the report's plots: escaped text, panels, axes, ticks, legends.

Plain string building: plots for 200,000 tries render in a fraction of a second and need no
plotting library. Text widths are estimated (no font metrics), generously, so labels do not collide.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WIDTH = 900
FONT = "system-ui, sans-serif"
FONT_SIZE = 12
TITLE_SIZE = 13
TEXT = "#222222"
MUTED = "#777777"
GRID = "#e6e6e6"
AXIS = "#444444"
# Average glyph advance in ems; DejaVu Sans (a wide default) averages a little under this.
CHAR_EM = 0.62
LEGEND_ROW = 17

# Characters XML 1.0 forbids even when escaped: user text with them would break the whole SVG.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def esc(value: object) -> str:
    """Text safe inside an SVG element or a double-quoted attribute, inline in HTML or standalone XML."""
    return _NOT_XML.sub("\ufffd", str(value)).translate(_ESCAPES)


def num(value: float) -> str:
    """A coordinate, to a tenth of a unit (the SVG is ~900 units wide)."""
    text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def text_width(text: str, size: float = FONT_SIZE) -> float:
    return len(text) * size * CHAR_EM


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text(x: float, y: float, content: str, *, size: float = 0, anchor: str = "", extra: str = "") -> str:
    """One <text>; `y` is the middle of the line. `content` is escaped here."""
    attrs = f' x="{num(x)}" y="{num(y)}" dy="0.35em"'
    if size:
        attrs += f' font-size="{size:g}"'
    if anchor:
        attrs += f' text-anchor="{anchor}"'
    return f"<text{attrs}{extra}>{esc(content)}</text>"


def nice_step(span: float, target: int) -> float:
    """The 1-2-2.5-5 x 10^k step that cuts `span` into about `target` parts, never more."""
    raw = span / max(target, 1)
    if not math.isfinite(raw) or raw <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for mantissa in (1.0, 2.0, 2.5, 5.0):
        if mantissa * magnitude >= raw * (1 - 1e-9):
            return mantissa * magnitude
    return 10.0 * magnitude


def ticks(low: float, high: float, target: int = 6, integer: bool = False) -> list[float]:
    """Round-numbered tick values inside [low, high]."""
    if not high > low:
        high = low + 1.0
    step = nice_step(high - low, target)
    if integer:
        step = float(math.ceil(step))
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [round(i * step, 12) + 0.0 for i in range(first, last + 1)]


def upper(value: float, target: int = 5, integer: bool = False) -> float:
    """A round axis end at or above `value` (1 when there is nothing to show)."""
    if not value > 0:
        return 1.0
    step = nice_step(value, target)
    if integer:
        step = float(math.ceil(step))
    return math.ceil(value / step - 1e-9) * step


def tick_label(value: float, values: Sequence[float]) -> str:
    """`value` with as many decimals as the tick step needs."""
    step = abs(values[1] - values[0]) if len(values) > 1 else abs(value) or 1.0
    decimals = 0
    while decimals < 9 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    return f"{value:,.{decimals}f}"


def tick_labels(values: Sequence[float]) -> list[str]:
    return [tick_label(v, values) for v in values]


@dataclass
class Panel:
    """A plotting area in SVG units, mapping data ranges onto it (y0 > y1 turns the y axis over)."""

    left: float
    top: float
    width: float
    height: float
    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0

    def __post_init__(self) -> None:
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1.0

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) * self.width / (self.x1 - self.x0)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.y0) * self.height / (self.y1 - self.y0)


def spines(panel: Panel) -> str:
    """The left and bottom axis lines."""
    p = panel
    return f'<path d="M{num(p.left)} {num(p.top)}V{num(p.bottom)}H{num(p.right)}" stroke="{AXIS}" fill="none"/>'


def x_axis(panel: Panel, values: Sequence[float], label: str = "", *, grid: bool = True, labels: bool = True) -> str:
    """Grid lines, tick marks and (optionally) tick labels and a title below the panel."""
    p = panel
    xs = [num(p.x(v)) for v in values]
    parts = []
    if grid and xs:
        lines = "".join(f"M{x} {num(p.top)}V{num(p.bottom)}" for x in xs)
        parts.append(f'<path d="{lines}" stroke="{GRID}" fill="none"/>')
    if xs:
        marks = "".join(f"M{x} {num(p.bottom)}v4" for x in xs)
        parts.append(f'<path d="{marks}" stroke="{AXIS}" fill="none"/>')
    if labels:
        texts = "".join(
            f'<text x="{x}" y="{num(p.bottom + 15)}" dy="0.35em">{t}</text>'
            for x, t in zip(xs, tick_labels(values), strict=True)
        )
        parts.append(f'<g text-anchor="middle">{texts}</g>')
    if label:
        parts.append(text(p.left + p.width / 2, p.bottom + 33, label, anchor="middle"))
    return "".join(parts)


def y_axis(
    panel: Panel, values: Sequence[float], label: str = "", *, grid: bool = True, names: Sequence[str] | None = None
) -> str:
    """Grid lines, ticks, labels (numbers, or `names` when given) and a rotated title left of the panel."""
    p = panel
    ys = [num(p.y(v)) for v in values]
    shown = list(names) if names is not None else tick_labels(values)
    parts = []
    if grid and ys:
        lines = "".join(f"M{num(p.left)} {y}H{num(p.right)}" for y in ys)
        parts.append(f'<path d="{lines}" stroke="{GRID}" fill="none"/>')
    if names is None and ys:
        marks = "".join(f"M{num(p.left)} {y}h-4" for y in ys)
        parts.append(f'<path d="{marks}" stroke="{AXIS}" fill="none"/>')
    texts = "".join(
        f'<text x="{num(p.left - 7)}" y="{y}" dy="0.35em">{esc(t)}</text>' for y, t in zip(ys, shown, strict=True)
    )
    parts.append(f'<g text-anchor="end">{texts}</g>')
    if label:
        widest = max((text_width(t) for t in shown), default=0.0)
        x, y = p.left - widest - 20, p.top + p.height / 2
        parts.append(text(x, y, label, anchor="middle", extra=f' transform="rotate(-90 {num(x)} {num(y)})"'))
    return "".join(parts)


def y_margin(labels: Iterable[str], title: bool = True) -> float:
    """Room left of a panel for its tick labels and its rotated axis title."""
    widest = max((text_width(t) for t in labels), default=0.0)
    return widest + (34 if title else 14)


@dataclass(frozen=True)
class Key:
    """One legend entry: a filled swatch, or a short line for line plots."""

    label: str
    color: str
    line: bool = False


def _key_width(key: Key) -> float:
    return 24 + text_width(key.label) + 14


def legend(keys: Sequence[Key], right: float, top: float, columns: int) -> tuple[str, float]:
    """Entries right-aligned at `right`, `columns` to a row; returns the SVG and its height."""
    if not keys:
        return "", 0.0
    columns = max(1, columns)
    parts = []
    rows = [keys[i : i + columns] for i in range(0, len(keys), columns)]
    for r, row in enumerate(rows):
        y = top + r * LEGEND_ROW + LEGEND_ROW / 2
        x = right - sum(_key_width(k) for k in row) + 14
        for key in row:
            if key.line:
                parts.append(f'<path d="M{num(x)} {num(y)}h18" stroke="{key.color}" stroke-width="2"/>')
            else:
                parts.append(f'<rect x="{num(x)}" y="{num(y - 5)}" width="18" height="10" fill="{key.color}"/>')
            parts.append(text(x + 24, y, key.label))
            x += _key_width(key)
    return "".join(parts), len(rows) * LEGEND_ROW


def header(
    title: str, keys: Sequence[Key], left: float, right: float, top: float, columns: int = 0
) -> tuple[str, float]:
    """A bold title at the left and its legend at the right: one line when both fit, else the legend below."""
    columns = columns or len(keys)
    head = text(left, top + 10, title, size=TITLE_SIZE, extra=' font-weight="bold"')
    legend_width = sum(_key_width(k) for k in keys[:columns])
    if len(keys) <= columns and text_width(title, TITLE_SIZE) + 24 + legend_width <= right - left:
        keys_svg, _ = legend(keys, right, top + 1, columns)
        return head + keys_svg, 22.0
    keys_svg, height = legend(keys, right, top + 22, columns)
    return head + keys_svg, 24.0 + height


def document(name: str, label: str, height: float, body: Iterable[str]) -> str:
    """A self-contained inline <svg> that scales to its container's width."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="plot-{name}" class="plot" role="img" '
        f'aria-label="{esc(label)}" viewBox="0 0 {WIDTH} {num(height)}" font-family="{FONT}" '
        f'font-size="{FONT_SIZE}" fill="{TEXT}">{"".join(body)}</svg>\n'
    )


def empty(name: str, title: str, message: str) -> str:
    """A short plot that says why there is nothing to draw."""
    body = [
        text(10, 12, title, size=TITLE_SIZE, extra=' font-weight="bold"'),
        text(WIDTH / 2, 48, message, anchor="middle", extra=f' fill="{MUTED}"'),
    ]
    return document(name, f"{title}: {message}", 70, body)


def stairs(panel: Panel, edges: Sequence[float], values: Sequence[float], color: str, fill: bool) -> str:
    """A step outline (or filled area) over bins `edges[i]..edges[i+1]`, from and back to y=0."""
    p = panel
    base = num(p.y(0.0))
    d = [f"M{num(p.x(edges[0]))} {base}"]
    for i, value in enumerate(values):
        y = num(p.y(value))
        d.append(f"V{y}H{num(p.x(edges[i + 1]))}")
    d.append(f"V{base}")
    if fill:
        return f'<path d="{"".join(d)}Z" fill="{color}" fill-opacity="0.85"/>'
    return f'<path d="{"".join(d)}" stroke="{color}" stroke-width="1.5" fill="none"/>'


def polyline(panel: Panel, xs: Sequence[float], ys: Sequence[float], color: str) -> str:
    """A line through the points; the mapping is inlined as this runs for every resource sample."""
    p = panel
    kx, ky = p.width / (p.x1 - p.x0), p.height / (p.y1 - p.y0)
    points = " ".join(
        f"{p.left + (x - p.x0) * kx:.1f},{p.bottom - (y - p.y0) * ky:.1f}" for x, y in zip(xs, ys, strict=True)
    )
    return f'<polyline points="{points}" stroke="{color}" stroke-width="1.5" fill="none"/>'
