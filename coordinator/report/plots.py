"""Report plots as self-contained inline SVG strings, drawn with coordinator.report.svg (no plotting library).

The tries come folded into a TryDigest (coordinator/report/digest.py), never one record each. Every
plot copes with no data and with very many tries by binning or sampling, so the SVG stays
small (a few hundred KiB at most) and rendering stays cheap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import attrgetter

from common.messages import BatchResult
from common.perf import PerfSample
from coordinator.report import svg
from coordinator.report.digest import Phases, TryDigest, TryMark
from coordinator.report.svg import Key, Panel

OUTCOME_COLORS = {"committed": "#4c78a8", "retry": "#f58518", "failed": "#e45756"}
PHASE_COLORS = {"download": "#72b7b2", "run()": "#4c78a8", "commit": "#54a24b", "other": "#9d9d9d"}
NODE_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")

MAX_BARS = 3000
MAX_BINS = 60
MAX_POINTS = 600
MAX_LEGEND_NODES = 12
NUMPY_FROM = 50_000  # values from which percentiles() selects with numpy instead of sorting
NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
RIGHT = svg.WIDTH - 14  # right edge of every panel
AXIS_ROOM = 46  # below a panel: tick labels and the axis title


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


def throughput_svg(digest: TryDigest) -> str:
    """Items/s and batches/s over time, binned on when each try finished."""
    title = "Throughput"
    if not digest.tries:
        return svg.empty("throughput", title, "No batches ran.")
    span = max(digest.throughput.last_end, 1e-3)
    width = _bin_width(span)
    count = max(1, math.ceil(span / width - 1e-9))
    items, good, bad = (
        [v / width for v in values] for values in digest.throughput.rebinned(width, count)
    )  # fmt: skip
    scale, xlabel = _time_unit(span)
    edges = [i * width / scale for i in range(len(items) + 1)]
    x_ticks = svg.ticks(0.0, edges[-1], 8)
    items_top = svg.upper(max(items))
    rate_top = svg.upper(max(max(good), max(bad)))
    items_ticks, rate_ticks = svg.ticks(0.0, items_top, 5), svg.ticks(0.0, rate_top, 5)
    left = svg.y_margin(svg.tick_labels(items_ticks) + svg.tick_labels(rate_ticks))
    keys = [Key("committed", OUTCOME_COLORS["committed"], line=True)]
    if any(bad):
        keys.append(Key("failed tries", OUTCOME_COLORS["failed"], line=True))
    head1, h1 = svg.header(f"{title}: items/s (bins of {_duration(width)})", [], left, RIGHT, 6)
    top = Panel(left, 6 + h1 + 4, RIGHT - left, 150, 0.0, edges[-1], 0.0, items_top)
    head2, h2 = svg.header("batches/s", keys, left, RIGHT, top.bottom + 14)
    bottom = Panel(left, top.bottom + 14 + h2 + 4, RIGHT - left, 150, 0.0, edges[-1], 0.0, rate_top)
    body = [
        head1,
        svg.x_axis(top, x_ticks, labels=False),
        svg.y_axis(top, items_ticks, "items/s"),
        svg.stairs(top, edges, items, OUTCOME_COLORS["committed"], fill=True),
        svg.spines(top),
        head2,
        svg.x_axis(bottom, x_ticks, xlabel),
        svg.y_axis(bottom, rate_ticks, "batches/s"),
        svg.stairs(bottom, edges, good, OUTCOME_COLORS["committed"], fill=False),
    ]
    if any(bad):
        body.append(svg.stairs(bottom, edges, bad, OUTCOME_COLORS["failed"], fill=False))
    body.append(svg.spines(bottom))
    label = "Throughput over time: items per second and batches per second"
    return svg.document("throughput", label, bottom.bottom + AXIS_ROOM, body)


def lane_of(record: BatchResult | TryMark) -> str:
    """Timeline row of a try: node, and process when known."""
    return f"{record.node_id}/{record.process}" if record.process else record.node_id


def _lanes(digest: TryDigest) -> list[str]:
    """Sorted distinct lanes."""
    return sorted({f"{node}/{process}" if process else node for node, process in digest.lanes})


def _even(seq: Sequence[TryMark], count: int) -> list[TryMark]:
    if count >= len(seq):
        return list(seq)
    if count <= 0:
        return []
    step = len(seq) / count
    return [seq[int(i * step)] for i in range(count)]


def sample_tries(digest: TryDigest, limit: int = MAX_BARS) -> list[TryMark]:
    """At most `limit` tries, keeping failed and retried ones first, the rest evenly spread."""
    bad, good = digest.marks()
    if len(bad) + len(good) <= limit:
        return bad + good
    kept_bad = _even(bad, limit // 2) if len(bad) > limit // 2 else bad
    return kept_bad + _even(good, limit - len(kept_bad))


def timeline_svg(digest: TryDigest, max_bars: int = MAX_BARS) -> str:
    """One row per node/process, one bar per try, coloured by outcome."""
    title = "Timeline of tries per node / process"
    if not digest.tries:
        return svg.empty("timeline", title, "No batches ran.")
    origin = digest.plot_origin
    lanes = _lanes(digest)
    shown = sample_tries(digest, max_bars)
    span = max(max(r.started + r.seconds for r in shown) - origin, 1e-3)
    scale, xlabel = _time_unit(span)
    if len(shown) < digest.tries:
        title += f" (showing {len(shown):,} of {digest.tries:,} tries, failed ones first)"
    present = sorted({r.outcome for r in shown}, key=list(OUTCOME_COLORS).index)
    step = max(1, len(lanes) // 45)
    rows = list(range(0, len(lanes), step))
    names = [svg.shorten(lanes[i], 28) for i in rows]
    left = svg.y_margin(names, title=False)
    head, head_height = svg.header(title, [Key(o, OUTCOME_COLORS[o]) for o in present], left, RIGHT, 6)
    height = 100 * min(max(1.4 + 0.24 * len(lanes), 2.6), 12)
    top = 6 + head_height + 4
    panel = Panel(left, top, RIGHT - left, height - top - AXIS_ROOM, 0.0, span * 1.01 / scale)
    panel.y0, panel.y1 = len(lanes) - 0.5, -0.5  # first lane at the top
    body = [
        head,
        svg.x_axis(panel, svg.ticks(0.0, panel.x1, 8), xlabel),
        svg.y_axis(panel, [float(i) for i in rows], grid=False, names=names),
        _bars(panel, shown, {lane: i for i, lane in enumerate(lanes)}, origin, scale, span / 1500),
        svg.spines(panel),
    ]
    return svg.document("timeline", title, height, body)


def _bars(
    panel: Panel, shown: Sequence[TryMark], row: dict[str, int], origin: float, scale: float, min_width: float
) -> str:
    """One rect per try (a near-instant try still shows as a sliver), grouped by outcome colour."""
    bar_height = svg.num(abs(panel.y(1.0) - panel.y(0.0)) * 0.76)
    lane_y = {lane: f"{panel.y(i - 0.38):.1f}" for lane, i in row.items()}
    per_second = panel.width / panel.x1 / scale
    groups: dict[str, list[str]] = defaultdict(list)
    for r in shown:
        # A try that began before the job's recorded start is drawn from the start (as if clipped).
        start = r.started - origin
        x = panel.left + (start if start > 0 else 0.0) * per_second
        width = max(r.seconds + (start if start < 0 else 0.0), min_width) * per_second
        # A hairline gap keeps back-to-back tries apart; a stroke would wash out thin bars.
        width = width - 0.5 if width > 2 else max(width, 1.0)
        tip = f"batch {r.batch_id}, try {r.attempt}, {r.outcome}, {_duration(r.seconds)}"
        groups[r.outcome].append(
            f'<rect x="{x:.1f}" y="{lane_y[lane_of(r)]}" width="{width:.1f}" height="{bar_height}">'
            f"<title>{tip}</title></rect>"
        )
    return "".join(f'<g fill="{OUTCOME_COLORS[o]}">{"".join(groups[o])}</g>' for o in OUTCOME_COLORS if o in groups)


def phase_seconds(records: Sequence[Phases]) -> dict[str, list[float]]:
    """Seconds per phase of each try; 'other' is what the three phases do not explain."""
    down = [r.download_seconds for r in records]
    run = [r.run_seconds for r in records]
    commit = [r.commit_seconds for r in records]
    rest = [r.seconds - d - u - c for r, d, u, c in zip(records, down, run, commit, strict=True)]
    return {"download": down, "run()": run, "commit": commit, "other": [v if v > 0 else 0.0 for v in rest]}


def percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float]:
    """Percentiles with linear interpolation between ranks (numpy's default); zeros when empty."""
    if not values:
        return [0.0 for _ in qs]
    if len(values) >= NUMPY_FROM:
        # Imported here: ~0.1 s that only pays off on huge jobs, where sorting in Python costs more.
        import numpy as np

        return [float(v) for v in np.percentile(np.asarray(values, dtype=float), qs)]
    ordered = sorted(values)
    out = []
    for q in qs:
        rank = q / 100 * (len(ordered) - 1)
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
    return out


@dataclass
class _Histogram:
    """Tries per duration bin and outcome; longer tries may be folded into the last bin."""

    edges: list[float]
    counts: dict[str, list[int]]
    note: str

    @property
    def top(self) -> float:
        totals = [sum(c[i] for c in self.counts.values()) for i in range(len(self.edges) - 1)]
        return svg.upper(max(totals), 5, integer=True)


def durations_svg(digest: TryDigest) -> str:
    """Histogram of try durations by outcome, and each phase's spread (box 25-75 %, whiskers 5-95 %)."""
    title = "Batch duration"
    sample = digest.durations.items
    if not sample:
        return svg.empty("durations", title, "No batches ran.")
    hist = _histogram(sample, digest.durations.scale)
    y_ticks = svg.ticks(0.0, hist.top, 5, integer=True)
    split = 470.0  # the histogram gets a little more room than the phases
    hist_left = svg.y_margin(svg.tick_labels(y_ticks))
    keys = [Key(o, OUTCOME_COLORS[o]) for o in hist.counts]
    hist_head, h1 = svg.header("Seconds per try", keys, hist_left, split, 6)
    committed = [p for p in sample if p.outcome == "committed"]
    shown = digest.committed_marks.seen if committed else digest.tries
    phases = phase_seconds(committed or sample)
    box_left = split + 24 + svg.y_margin(phases, title=False)
    phases_title = f"Phases of {shown:,} {'try' if shown == 1 else 'tries'}"
    box_head, h2 = svg.header(phases_title, [], box_left, RIGHT, 6)
    top = 6 + max(h1, h2) + 4
    hist_panel = Panel(hist_left, top, split - hist_left, 240, hist.edges[0], hist.edges[-1], 0.0, hist.top)
    body = [
        hist_head,
        svg.x_axis(hist_panel, svg.ticks(hist.edges[0], hist.edges[-1], 6), f"seconds{hist.note}"),
        svg.y_axis(hist_panel, y_ticks, "tries"),
        _histogram_bars(hist_panel, hist),
        svg.spines(hist_panel),
        box_head,
        _phase_boxes(Panel(box_left, top, RIGHT - box_left, 240), phases),
    ]
    label = "Batch duration distribution, split into download, run() and commit"
    return svg.document("durations", label, top + 240 + AXIS_ROOM, body)


def _histogram(records: Sequence[Phases], scale: float = 1.0) -> _Histogram:
    """40 bins from 0 (or the shortest try) to just past the longest try, or to the 99th percentile.

    `records` may be a sample: each stands for `scale` tries.
    """
    seconds = [r.seconds for r in records]
    high = max(seconds)
    cap = percentiles(seconds, [99])[0]
    note = ""
    if cap > 0 and high > 3 * cap:
        # A few stragglers would squash everything else into one bin: fold them into the last bin.
        longer = round(sum(s > cap for s in seconds) * scale)
        note = f" ({longer:,} longer tries counted in the last bin)"
        high = cap
    low = min(seconds)
    if low < 0.25 * high or high - low < 0.1 * high:
        low = 0.0  # start at zero unless that leaves most of the plot empty
    # One bin of headroom so the longest try sits inside the last bin, not on its edge.
    end = max(high + (high - low) / 40, low + 1e-3)
    width = (end - low) / 40
    counts: dict[str, list[int]] = {o: [0] * 40 for o in OUTCOME_COLORS}
    for record, value in zip(records, seconds, strict=True):
        i = int(((value if value < high else high) - low) / width)
        counts[record.outcome][0 if i < 0 else 39 if i > 39 else i] += 1
    if scale != 1.0:
        counts = {o: [round(c * scale) for c in values] for o, values in counts.items()}
    present = {o: c for o, c in counts.items() if any(c)}
    return _Histogram([low + width * i for i in range(41)], present, note)


def _histogram_bars(panel: Panel, hist: _Histogram) -> str:
    """Stacked bars, one colour per outcome."""
    base = [0] * (len(hist.edges) - 1)
    groups = []
    for outcome, counts in hist.counts.items():
        rects = []
        for i, count in enumerate(counts):
            if not count:
                continue
            x, y_high, y_low = panel.x(hist.edges[i]), panel.y(base[i] + count), panel.y(base[i])
            rects.append(
                f'<rect x="{svg.num(x)}" y="{svg.num(y_high)}" width="{svg.num(panel.x(hist.edges[i + 1]) - x)}" '
                f'height="{svg.num(y_low - y_high)}"/>'
            )
            base[i] += count
        groups.append(f'<g fill="{OUTCOME_COLORS[outcome]}">{"".join(rects)}</g>')
    return "".join(groups)


def _phase_boxes(panel: Panel, phases: dict[str, list[float]]) -> str:
    """Per phase: whiskers 5-95 %, box 25-75 %, a median line and a note saying the median."""
    names = list(phases)
    stats = [percentiles(phases[name], [5, 25, 50, 75, 95]) for name in names]
    notes = [f"median {_duration(s[2])}" for s in stats]
    # Leave room right of the longest whisker for its note.
    room = max(panel.width - 8 - max(svg.text_width(n) for n in notes), 40.0)
    panel.x1 = max(max(s[4] for s in stats), 1e-3) * panel.width / room
    panel.y0, panel.y1 = len(names) - 0.5, -0.6
    parts = [
        svg.x_axis(panel, svg.ticks(0.0, panel.x1, 6), "seconds"),
        svg.y_axis(panel, [float(i) for i in range(len(names))], grid=False, names=names),
    ]
    for i, (name, (p5, p25, p50, p75, p95)) in enumerate(zip(names, stats, strict=True)):
        color, y, x25 = PHASE_COLORS[name], svg.num(panel.y(i)), panel.x(p25)
        box_top, box_bottom = panel.y(i - 0.25), panel.y(i + 0.25)
        parts.append(
            f'<path d="M{svg.num(panel.x(p5))} {y}H{svg.num(panel.x(p95))}" stroke="{color}" stroke-width="1.2"/>'
            f'<rect x="{svg.num(x25)}" y="{svg.num(box_top)}" width="{svg.num(max(panel.x(p75) - x25, 1.0))}" '
            f'height="{svg.num(box_bottom - box_top)}" fill="{color}" fill-opacity="0.85"/>'
            f'<path d="M{svg.num(panel.x(p50))} {svg.num(panel.y(i - 0.3))}V{svg.num(panel.y(i + 0.3))}" '
            f'stroke="#222222" stroke-width="1.4"/>'
        )
        parts.append(svg.text(panel.x(p95) + 6, panel.y(i), notes[i]))
    parts.append(svg.spines(panel))
    return "".join(parts)


def _downsample(times: list[float], values: list[float], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most `limit` points, each the mean of a run of consecutive samples."""
    n = len(times)
    if n <= limit:
        return times, values
    bounds = [i * n // limit for i in range(limit + 1)]
    pairs = list(pairwise(bounds))
    return [sum(times[a:b]) / (b - a) for a, b in pairs], [sum(values[a:b]) / (b - a) for a, b in pairs]


def resources_svg(perf: Sequence[PerfSample], t0: float | None = None) -> str:
    """CPU % and resident memory per node over time, from psutil samples."""
    title = "Resource use per node"
    if not perf:
        return svg.empty("resources", title, "No resource samples were recorded.")
    origin = _origin([s.at for s in perf], t0)
    by_node: dict[str, list[PerfSample]] = defaultdict(list)
    for s in perf:
        by_node[s.node_id].append(s)
    span = max(max(s.at for s in perf) - origin, 1e-3)
    scale, xlabel = _time_unit(span)
    peak = max(s.rss_bytes for s in perf)
    mem_unit, mem_label = (1024**3, "GiB") if peak >= 2 * 1024**3 else (1024**2, "MiB")
    mem_top = svg.upper(peak / mem_unit)
    cpu_ticks, mem_ticks = svg.ticks(0.0, 100.0, 5), svg.ticks(0.0, mem_top, 5)
    left = svg.y_margin(svg.tick_labels(cpu_ticks) + svg.tick_labels(mem_ticks))
    nodes = sorted(by_node)
    keys = [Key(svg.shorten(node, 24), NODE_COLORS[i % len(NODE_COLORS)], line=True) for i, node in enumerate(nodes)]
    cpu_title = f"{title}: CPU % of the machine (process tree)"
    head1, h1 = svg.header(cpu_title, keys[:MAX_LEGEND_NODES], left, RIGHT, 6, min(len(nodes), 6))
    x_end = span * 1.02 / scale
    cpu = Panel(left, 6 + h1 + 4, RIGHT - left, 150, 0.0, x_end, 0.0, 105.0)
    head2, h2 = svg.header("Resident memory (process tree)", [], left, RIGHT, cpu.bottom + 14)
    mem = Panel(left, cpu.bottom + 14 + h2 + 4, RIGHT - left, 150, 0.0, x_end, 0.0, mem_top)
    x_ticks = svg.ticks(0.0, x_end, 8)
    body = [head1, svg.x_axis(cpu, x_ticks, labels=False), svg.y_axis(cpu, cpu_ticks, "CPU %"), head2]
    body += [svg.x_axis(mem, x_ticks, xlabel), svg.y_axis(mem, mem_ticks, mem_label)]
    for i, node in enumerate(nodes):
        samples = sorted((s for s in by_node[node] if s.at >= origin), key=attrgetter("at"))
        times = [(s.at - origin) / scale for s in samples]
        color = NODE_COLORS[i % len(NODE_COLORS)]
        body.append(svg.polyline(cpu, *_downsample(times, [s.cpu_percent for s in samples]), color))
        body.append(svg.polyline(mem, *_downsample(times, [s.rss_bytes / mem_unit for s in samples]), color))
    body += [svg.spines(cpu), svg.spines(mem)]
    label = "Resource use per node: CPU and memory over time"
    return svg.document("resources", label, mem.bottom + AXIS_ROOM, body)


def _duration(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.2g} ms"  # fast tries: "0.47 ms", not "0 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
