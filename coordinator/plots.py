"""Report plots: matplotlib figures rendered as self-contained inline SVG strings.

Figures are built from `matplotlib.figure.Figure` directly (no pyplot, no global backend), so
rendering is safe in any process and leaves no state behind. Every plot copes with no data and
with very many records by binning or sampling, so the SVG stays small.
"""

from __future__ import annotations

import functools
import io
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from common.messages import BatchResult
from common.perf import PerfSample

OUTCOME_COLORS = {"committed": "#4c78a8", "retry": "#f58518", "failed": "#e45756"}
PHASE_COLORS = {"download": "#72b7b2", "run()": "#4c78a8", "commit": "#54a24b", "other": "#9d9d9d"}
NODE_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")

MAX_BARS = 3000
MAX_BINS = 60
MAX_POINTS = 600
NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)

_STYLE: dict[Any, Any] = {
    # Glyphs become paths: the page needs no font and looks the same in every browser.
    "svg.fonttype": "path",
    # Fixed salt: the same input renders the same SVG; ids are made unique per plot afterwards.
    "svg.hashsalt": "batchfleet",
    # Node ids and process names are user text: never parse them as mathtext.
    "text.parse_math": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "legend.frameon": False,
}

P = ParamSpec("P")
R = TypeVar("R")


def _styled(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _to_svg(fig: Figure, prefix: str, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return clean_svg(buf.getvalue(), prefix, label)


def clean_svg(raw: str, prefix: str, label: str) -> str:
    """Make matplotlib's SVG fit inline in HTML: no prolog, metadata or comments, ids unique per plot."""
    svg = raw[raw.find("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    # matplotlib escapes '--' inside its comments, so the first '-->' always closes the comment.
    svg = re.sub(r"\s*<!--.*?-->", "", svg, flags=re.S)
    svg = svg.replace("xlink:href=", "href=")
    svg = re.sub(r'\bid="', f'id="{prefix}-', svg)
    svg = svg.replace('href="#', f'href="#{prefix}-').replace("url(#", f"url(#{prefix}-")
    head, rest = svg.split(">", 1)
    head = re.sub(r'\s(?:width|height)="[^"]*"', "", head)
    head = head.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    safe_label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return f'{head} class="plot" role="img" aria-label="{safe_label}">{rest.strip()}\n'


def _empty(prefix: str, title: str, message: str) -> str:
    fig = _figure(9, 0.75)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, loc="left")
    ax.text(0.5, 0.4, message, ha="center", va="center", color="#777777", transform=ax.transAxes)
    return _to_svg(fig, prefix, f"{title}: {message}")


def _origin(starts: Sequence[float], t0: float | None) -> float:
    if t0:
        return t0
    return min(starts) if starts else 0.0


def _time_unit(span: float) -> tuple[float, str]:
    if span < 180:
        return 1.0, "seconds since start"
    if span < 3 * 3600:
        return 60.0, "minutes since start"
    return 3600.0, "hours since start"


def _bin_width(span: float) -> float:
    for step in NICE_STEPS:
        if span / step <= MAX_BINS:
            return float(step)
    return span / MAX_BINS


def _rate(ends: np.ndarray, weights: np.ndarray | None, edges: np.ndarray, width: float) -> np.ndarray:
    counts, _ = np.histogram(ends, bins=edges, weights=weights)
    return np.asarray(counts, dtype=float) / width


@_styled
def throughput_svg(records: Sequence[BatchResult], t0: float | None = None) -> str:
    """Items/s and batches/s over time, binned on when each try finished."""
    title = "Throughput"
    if not records:
        return _empty("throughput", title, "No batches ran.")
    origin = _origin([r.started for r in records], t0)
    ends = np.fromiter((r.started + r.seconds - origin for r in records), float, len(records))
    ok = np.fromiter((r.outcome == "committed" for r in records), bool, len(records))
    items = np.fromiter((r.succeeded for r in records), float, len(records))
    span = max(float(ends.max()), 1e-3)
    width = _bin_width(span)
    edges = np.arange(0.0, span + width, width)
    if len(edges) < 2:
        edges = np.array([0.0, width])
    scale, xlabel = _time_unit(span)
    fig = _figure(9, 4.2)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.stairs(_rate(ends[ok], items[ok], edges, width), edges / scale, fill=True, color="#4c78a8", alpha=0.85)
    top.set_title(f"{title}: items/s (bins of {_duration(width)})", loc="left")
    top.set_ylabel("items/s")
    bottom.stairs(_rate(ends[ok], None, edges, width), edges / scale, color="#4c78a8", label="committed")
    if (~ok).any():
        bottom.stairs(_rate(ends[~ok], None, edges, width), edges / scale, color="#e45756", label="failed tries")
    bottom.set_title("batches/s", loc="left")
    bottom.set_ylabel("batches/s")
    bottom.set_xlabel(xlabel)
    bottom.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2)
    for ax in (top, bottom):
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, edges[-1] / scale)
    return _to_svg(fig, "throughput", "Throughput over time: items per second and batches per second")


def lane_of(record: BatchResult) -> str:
    """Timeline row of a try: node, and process when known."""
    return f"{record.node_id}/{record.process}" if record.process else record.node_id


def _even(seq: Sequence[BatchResult], count: int) -> list[BatchResult]:
    if count >= len(seq):
        return list(seq)
    if count <= 0:
        return []
    step = len(seq) / count
    return [seq[int(i * step)] for i in range(count)]


def sample_tries(records: Sequence[BatchResult], limit: int = MAX_BARS) -> list[BatchResult]:
    """At most `limit` tries, keeping failed and retried ones first, the rest evenly spread."""
    if len(records) <= limit:
        return list(records)
    ordered = sorted(records, key=lambda r: r.started)
    bad = [r for r in ordered if r.outcome != "committed"]
    good = [r for r in ordered if r.outcome == "committed"]
    kept_bad = _even(bad, limit // 2) if len(bad) > limit // 2 else bad
    return kept_bad + _even(good, limit - len(kept_bad))


@_styled
def timeline_svg(records: Sequence[BatchResult], t0: float | None = None, max_bars: int = MAX_BARS) -> str:
    """One row per node/process, one bar per try, coloured by outcome."""
    title = "Timeline of tries per node / process"
    if not records:
        return _empty("timeline", title, "No batches ran.")
    origin = _origin([r.started for r in records], t0)
    lanes = sorted({lane_of(r) for r in records})
    row = {lane: i for i, lane in enumerate(lanes)}
    shown = sample_tries(records, max_bars)
    span = max(max(r.started + r.seconds for r in shown) - origin, 1e-3)
    scale, xlabel = _time_unit(span)
    min_width = span / 1500  # a near-instant try still shows as a sliver
    bars: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for r in shown:
        start = (r.started - origin) / scale
        bars[(row[lane_of(r)], r.outcome)].append((start, max(r.seconds, min_width) / scale))
    fig = _figure(9, min(max(1.4 + 0.24 * len(lanes), 2.6), 12))
    ax = fig.add_subplot()
    for (index, outcome), ranges in sorted(bars.items()):
        ax.broken_barh(
            ranges, (index - 0.38, 0.76), facecolors=OUTCOME_COLORS[outcome], edgecolor="white", linewidth=0.4
        )
    _lane_ticks(ax, lanes)
    ax.set_xlim(0, span * 1.01 / scale)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    present = sorted({r.outcome for r in shown}, key=list(OUTCOME_COLORS).index)
    handles = [Patch(color=OUTCOME_COLORS[o], label=o) for o in present]
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(handles))
    if len(shown) < len(records):
        title += f" (showing {len(shown):,} of {len(records):,} tries, failed ones first)"
    ax.set_title(title, loc="left")
    return _to_svg(fig, "timeline", title)


def _lane_ticks(ax: Axes, lanes: list[str]) -> None:
    step = max(1, len(lanes) // 45)
    ticks = list(range(0, len(lanes), step))
    ax.set_yticks(ticks, [_short(lanes[i], 28) for i in ticks])
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def phase_seconds(records: Sequence[BatchResult]) -> dict[str, np.ndarray]:
    """Seconds per phase of each try; 'other' is what the three phases do not explain."""
    n = len(records)
    down = np.fromiter((r.download_seconds for r in records), float, n)
    run = np.fromiter((r.run_seconds for r in records), float, n)
    commit = np.fromiter((r.commit_seconds for r in records), float, n)
    total = np.fromiter((r.seconds for r in records), float, n)
    other = np.clip(total - down - run - commit, 0.0, None)
    return {"download": down, "run()": run, "commit": commit, "other": other}


@_styled
def durations_svg(records: Sequence[BatchResult]) -> str:
    """Histogram of try durations by outcome, and each phase's spread (box 25-75 %, whiskers 5-95 %)."""
    title = "Batch duration"
    if not records:
        return _empty("durations", title, "No batches ran.")
    fig = _figure(9, 3.4)
    left, right = fig.subplots(1, 2, width_ratios=(1.15, 1))
    _duration_histogram(left, records)
    committed = [r for r in records if r.outcome == "committed"] or list(records)
    _phase_boxes(right, phase_seconds(committed))
    right.set_title(f"Phases of {len(committed):,} {'try' if len(committed) == 1 else 'tries'}", loc="left")
    return _to_svg(fig, "durations", "Batch duration distribution, split into download, run() and commit")


def _duration_histogram(ax: Axes, records: Sequence[BatchResult]) -> None:
    seconds = np.fromiter((r.seconds for r in records), float, len(records))
    high = float(seconds.max()) if len(seconds) else 0.0
    cap = float(np.percentile(seconds, 99))
    note = ""
    if cap > 0 and high > 3 * cap:
        # A few stragglers would squash everything else into one bin: fold them into the last bin.
        note = f" ({int((seconds > cap).sum()):,} longer tries counted in the last bin)"
        high = cap
    low = float(seconds.min())
    if low < 0.25 * high or high - low < 0.1 * high:
        low = 0.0  # start at zero unless that leaves most of the plot empty
    # One bin of headroom so the longest try sits inside the last bin, not on its edge.
    edges = np.linspace(low, max(high + (high - low) / 40, low + 1e-3), 41)
    data, colors, labels = [], [], []
    for outcome, color in OUTCOME_COLORS.items():
        values = np.clip([r.seconds for r in records if r.outcome == outcome], 0.0, high)
        if len(values):
            data.append(values)
            colors.append(color)
            labels.append(outcome)
    ax.hist(data, bins=edges.tolist(), stacked=True, color=colors, label=labels)
    ax.set_title("Seconds per try", loc="left")
    ax.set_xlabel(f"seconds{note}")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("tries")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(labels))


def _phase_boxes(ax: Axes, phases: dict[str, np.ndarray]) -> None:
    names = list(phases)
    for i, name in enumerate(names):
        p5, p25, p50, p75, p95 = np.percentile(phases[name], [5, 25, 50, 75, 95])
        color = PHASE_COLORS[name]
        ax.hlines(i, p5, p95, color=color, linewidth=1.2)
        ax.barh(i, max(p75 - p25, 1e-9), left=p25, height=0.5, color=color, alpha=0.85)
        ax.vlines(p50, i - 0.3, i + 0.3, color="#222222", linewidth=1.4)
        ax.annotate(f"median {_duration(p50)}", (p95, i), xytext=(6, 0), textcoords="offset points", va="center")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.6)
    ax.set_xlim(left=0)
    ax.margins(x=0.35)
    ax.set_xlabel("seconds")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="y", length=0)


def _downsample(times: np.ndarray, values: np.ndarray, limit: int = MAX_POINTS) -> tuple[Any, Any]:
    if len(times) <= limit:
        return times, values
    chunks = np.array_split(np.arange(len(times)), limit)
    return (
        np.array([times[c].mean() for c in chunks]),
        np.array([values[c].mean() for c in chunks]),
    )


@_styled
def resources_svg(perf: Sequence[PerfSample], t0: float | None = None) -> str:
    """CPU % and resident memory per node over time, from psutil samples."""
    title = "Resource use per node"
    if not perf:
        return _empty("resources", title, "No resource samples were recorded.")
    origin = _origin([s.at for s in perf], t0)
    by_node: dict[str, list[PerfSample]] = defaultdict(list)
    for s in perf:
        by_node[s.node_id].append(s)
    span = max(max(s.at for s in perf) - origin, 1e-3)
    scale, xlabel = _time_unit(span)
    peak = max(s.rss_bytes for s in perf)
    mem_unit, mem_label = (1024**3, "GiB") if peak >= 2 * 1024**3 else (1024**2, "MiB")
    fig = _figure(9, 4.2)
    cpu_ax, mem_ax = fig.subplots(2, 1, sharex=True)
    for i, (node, samples) in enumerate(sorted(by_node.items())):
        samples.sort(key=lambda s: s.at)
        times = (np.array([s.at for s in samples]) - origin) / scale
        color = NODE_COLORS[i % len(NODE_COLORS)]
        label = _short(node, 24) if i < 12 else None
        cpu_ax.plot(*_downsample(times, np.array([s.cpu_percent for s in samples])), color=color, label=label)
        rss = np.array([s.rss_bytes for s in samples], dtype=float) / mem_unit
        mem_ax.plot(*_downsample(times, rss), color=color)
    cpu_ax.set_title(f"{title}: CPU % of the machine (process tree)", loc="left")
    cpu_ax.set_ylabel("CPU %")
    cpu_ax.set_ylim(0, 105)
    mem_ax.set_title("Resident memory (process tree)", loc="left")
    mem_ax.set_ylabel(mem_label)
    mem_ax.set_ylim(bottom=0)
    mem_ax.set_xlabel(xlabel)
    mem_ax.set_xlim(left=0)
    cpu_ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=min(len(by_node), 6))
    return _to_svg(fig, "resources", "Resource use per node: CPU and memory over time")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
