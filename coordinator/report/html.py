"""logs/report.html: one self-contained page (inline CSS and SVG, no scripts, no network)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from common.messages import JobConfig
from common.perf import PerfSample
from coordinator.report import plots
from coordinator.report.digest import FailureGroup, NodeStats, TryDigest

MAX_GROUPS = 50
MAX_IDS = 100
MAX_TRACEBACK = 20_000
NONE = "&ndash;"  # shown for a missing value
_TIME_CARDS = {"Started", "Finished"}

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_FLAG = re.compile(r"pass(word)?|secret|token|api[-_]?key|access[-_]?key|credential|auth", re.I)
_SECRET_NAME = re.compile(r"pass|secret|token|key|credential|auth|conn", re.I)

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:#1f2328;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 48px}
header h1{font-size:22px;margin:0 0 2px}
header .sub{color:#59636e}
nav{margin:12px 0 4px;display:flex;gap:14px;flex-wrap:wrap}
nav a{color:#0b62c4;text-decoration:none}
section{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}
.badge{display:inline-block;padding:1px 10px;border-radius:10px;color:#fff;font-weight:600;
 font-size:13px;vertical-align:middle;margin-left:8px}
.succeeded{background:#1a7f37}.failed{background:#cf222e}.cancelled{background:#9a6700}
.other{background:#59636e}
.reason{margin:10px 0 0;padding:8px 12px;background:#fff8f8;border-left:4px solid #cf222e}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.card{border:1px solid #d8dee4;border-radius:6px;padding:8px 10px}
.card .k{color:#59636e;font-size:12px}.card .v{font-size:18px;font-weight:600}
.card .v.sm{font-size:14px;line-height:1.6}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:#fbfcfd}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;border:1px solid #eaeef2;border-radius:6px;padding:8px;max-height:360px;
 overflow:auto;white-space:pre-wrap;word-break:break-word;margin:6px 0 0}
details summary{cursor:pointer;color:#0b62c4}
.ids{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-word}
.muted{color:#59636e}
.split{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.split th{width:40%}
svg.plot{display:block;width:100%;height:auto;margin:4px 0 14px}
"""


class Redactor:
    """Hides URI credentials and the values of secret-looking environment variables."""

    def __init__(self, environment_variables: Mapping[str, str]):
        values = {v for k, v in environment_variables.items() if _SECRET_NAME.search(k) and len(v) >= 6}
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = _USERINFO.sub("***@", text)
        for value in self._values:
            text = text.replace(value, "***")
        return text

    def args(self, args: Iterable[str]) -> list[str]:
        out: list[str] = []
        hide_next = False
        for arg in args:
            if hide_next:
                out.append("***")
                hide_next = False
            elif arg.startswith("-") and _SECRET_FLAG.search(arg.split("=", 1)[0]):
                hide_next = "=" not in arg
                out.append(arg if hide_next else arg.split("=", 1)[0] + "=***")
            else:
                out.append(self(arg))
        return out


def node_stats(digest: TryDigest, perf: Sequence[PerfSample]) -> list[NodeStats]:
    """Per-node totals, including nodes seen only through resource samples."""
    nodes = {k: replace(v, processes=set(v.processes), cpu=[]) for k, v in digest.nodes.items()}
    for p in perf:
        s = nodes.get(p.node_id)
        if s is None:
            s = nodes[p.node_id] = NodeStats(p.node_id)
        s.cpu.append(p.cpu_percent)
        s.peak_rss = max(s.peak_rss, p.rss_bytes)
        s.last_seen = max(s.last_seen, p.at)
    return [nodes[k] for k in sorted(nodes)]


def render_report(
    job: JobConfig,
    digest: TryDigest,
    summary: Mapping[str, Any],
    perf: Sequence[PerfSample],
) -> str:
    """The whole report as one HTML document."""
    redact = Redactor(job.environment_variables)
    title = f"batchfleet report: {job.name}"
    body = "\n".join(
        [
            _header(job, summary, redact),
            _summary_section(summary, digest, redact),
            _plots_section(digest, perf, summary.get("started") or None),
            _failures_section(digest, redact),
            _slowest_section(digest),
            _nodes_section(digest, perf),
            _settings_section(job, redact),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def write_report(
    path: Path,
    job: JobConfig,
    digest: TryDigest,
    summary: Mapping[str, Any],
    perf: Sequence[PerfSample],
) -> Path:
    """Render and write the report atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_report(job, digest, summary, perf), encoding="utf-8")
    tmp.replace(path)
    return path


def _header(job: JobConfig, summary: Mapping[str, Any], redact: Redactor) -> str:
    state = str(summary.get("state") or "unknown")
    css = state if state in {"succeeded", "failed", "cancelled"} else "other"
    reason = summary.get("reason")
    reason_html = f'<p class="reason">{escape(redact(str(reason)))}</p>' if reason else ""
    reason_html += _trust_note(summary)
    links = ["summary", "plots", "failures", "slowest", "nodes", "settings"]
    nav = "".join(f'<a href="#{k}">{k.capitalize()}</a>' for k in links)
    return (
        f'<header><h1>{escape(job.name)}<span class="badge {css}">{escape(state)}</span></h1>'
        f'<div class="sub">job <code>{escape(job.job_id)}</code> · entry script '
        f"<code>{escape(job.entry_script)}</code> · created {_when(job.created_at)}</div>"
        f"{reason_html}<nav>{nav}</nav></header>"
    )


def _trust_note(summary: Mapping[str, Any]) -> str:
    """An unsigned fleet run, and what was dropped as untrusted, said where nobody misses it."""
    notes = []
    if summary.get("unsigned"):
        notes.append("Unsigned fleet run (--insecure): broker messages were believed without proof.")
    rejected = summary.get("rejected") or {}
    if rejected:
        counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(rejected.items()))
        notes.append(f"Dropped as untrusted: {counts}.")
    return "".join(f'<p class="reason">{escape(note)}</p>' for note in notes)


def _summary_section(summary: Mapping[str, Any], digest: TryDigest, redact: Redactor) -> str:
    started, finished = summary.get("started"), summary.get("finished")
    elapsed = (finished - started) if started and finished else None
    items_ok = summary.get("items_succeeded")
    rate = f"{items_ok / elapsed:,.1f}" if elapsed and items_ok is not None else NONE
    retries = digest.retries
    cards = [
        (
            "Batches committed",
            f"{_num(summary.get('batches_committed'))} / {_num(summary.get('batches_total'))}",
        ),
        ("Batches failed", _num(summary.get("batches_failed"))),
        ("Batches never ran", _num(summary.get("batches_never_ran"))),
        ("Reused on resume", _num(summary.get("reused"))),
        ("Items succeeded", f"{_num(items_ok)} / {_num(summary.get('items_total'))}"),
        ("Items failed", _num(summary.get("items_failed"))),
        ("Tries / retries", f"{digest.tries:,} / {retries:,}"),
        ("Duration", _seconds(elapsed)),
        ("Items/s", rate),
        ("Started", _when(started)),
        ("Finished", _when(finished)),
    ]
    html = "".join(
        f'<div class="card"><div class="k">{k}</div><div class="v{" sm" if k in _TIME_CARDS else ""}">{v}</div></div>'
        for k, v in cards
    )
    merged = summary.get("merged")
    note = f'<p class="merged">Output: {escape(redact(str(merged)))}</p>' if merged else ""
    return f'<section id="summary"><h2>Summary</h2><div class="cards">{html}</div>{note}</section>'


def _plots_section(digest: TryDigest, perf: Sequence[PerfSample], t0: float | None) -> str:
    svgs = [
        plots.throughput_svg(digest),
        plots.timeline_svg(digest),
        plots.durations_svg(digest),
        plots.resources_svg(perf, t0 or digest.plot_origin),
    ]
    return f'<section id="plots"><h2>Plots</h2>{"".join(svgs)}</section>'


def _failures_section(digest: TryDigest, redact: Redactor) -> str:
    groups = digest.failure_groups()
    if not groups:
        return '<section id="failures"><h2>Failures</h2><p class="muted">No try failed.</p></section>'
    rows = [_failure_row(g, redact, opened=i == 0) for i, g in enumerate(groups[:MAX_GROUPS])]
    more = ""
    if len(groups) > MAX_GROUPS:
        rest = sum(g.tries for g in groups[MAX_GROUPS:]) + digest.more_groups_tries
        more = f'<p class="muted">{len(groups) - MAX_GROUPS:,} more groups ({rest:,} tries) not shown.</p>'
    elif digest.more_groups_tries:
        more = f'<p class="muted">{digest.more_groups_tries:,} tries of other kinds of error not shown.</p>'
    head = (
        '<tr><th>Error</th><th class="n">Tries</th><th class="n">Batches</th>'
        '<th class="n">Failed for good</th><th>Batch ids and first traceback</th></tr>'
    )
    total = sum(g.tries for g in groups) + digest.more_groups_tries
    counts = f"{_plural(total, 'failed try', 'failed tries')} in {_plural(len(groups), 'group')}"
    intro = f'<p class="muted">{counts}.</p>'
    table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<section id="failures"><h2>Failures</h2>{intro}{table}{more}</section>'


def _failure_row(group: FailureGroup, redact: Redactor, opened: bool) -> str:
    ids = sorted(group.batches)
    shown = ", ".join(str(i) for i in ids[:MAX_IDS])
    if group.batch_count > MAX_IDS:
        shown += f" … and {group.batch_count - MAX_IDS:,} more"
    first = group.first
    where = f"batch {first.batch_id}, try {first.attempt}, {plots.lane_of(first)}"
    trace = redact(first.traceback or first.error or "(no traceback recorded)")
    if len(trace) > MAX_TRACEBACK:
        trace = trace[:MAX_TRACEBACK] + "\n… (cut)"
    return (
        f"<tr><td><b>{escape(group.error_type)}</b><br>{escape(redact(group.message))}</td>"
        f'<td class="n">{group.tries:,}</td><td class="n">{group.batch_count:,}</td>'
        f'<td class="n">{group.final_count:,}</td>'
        f'<td><div class="ids">{shown}</div><details{" open" if opened else ""}>'
        f"<summary>First traceback ({escape(where)})</summary>"
        f"<pre>{escape(trace)}</pre></details></td></tr>"
    )


def _slowest_section(digest: TryDigest) -> str:
    slow = digest.slowest()
    if not slow:
        return '<section id="slowest"><h2>Slowest batches</h2><p class="muted">No batches ran.</p></section>'
    head = "".join(
        f"<th{' class=n' if n else ''}>{t}</th>"
        for t, n in [
            ("Batch", 1), ("Try", 1), ("Node / process", 0), ("Outcome", 0), ("Items", 1),
            ("Total", 1), ("Download", 1), ("run()", 1), ("Commit", 1), ("Started", 0),
        ]
    )  # fmt: skip
    rows = "".join(
        f'<tr><td class="n">{r.batch_id}</td><td class="n">{r.attempt}</td>'
        f"<td>{escape(plots.lane_of(r))}</td>"
        f'<td>{escape(r.outcome)}</td><td class="n">{r.succeeded:,} / {r.total:,}</td>'
        f'<td class="n">{_seconds(r.seconds)}</td><td class="n">{_seconds(r.download_seconds)}</td>'
        f'<td class="n">{_seconds(r.run_seconds)}</td><td class="n">{_seconds(r.commit_seconds)}</td>'
        f"<td>{_when(r.started)}</td></tr>"
        for r in slow
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return f'<section id="slowest"><h2>Slowest {_plural(len(slow), "try", "tries")}</h2>{table}</section>'


def _nodes_section(digest: TryDigest, perf: Sequence[PerfSample]) -> str:
    stats = node_stats(digest, perf)
    if not stats:
        return '<section id="nodes"><h2>Nodes</h2><p class="muted">No node reported.</p></section>'
    head = (
        '<tr><th>Node</th><th class="n">Processes</th><th class="n">Batches</th>'
        '<th class="n">Failed tries</th>'
        '<th class="n">Items</th><th class="n">Busy</th><th class="n">Mean CPU</th>'
        '<th class="n">Peak memory</th><th>Last seen</th></tr>'
    )
    rows = "".join(
        f'<tr><td>{escape(s.node_id)}</td><td class="n">{len(s.processes) or NONE}</td>'
        f'<td class="n">{s.committed:,}</td><td class="n">{s.failed_tries:,}</td>'
        f'<td class="n">{s.items:,}</td><td class="n">{_seconds(s.seconds)}</td>'
        f'<td class="n">{f"{sum(s.cpu) / len(s.cpu):.1f} %" if s.cpu else NONE}</td>'
        f'<td class="n">{_bytes(s.peak_rss) if s.cpu else NONE}</td><td>{_when(s.last_seen)}</td></tr>'
        for s in stats
    )
    table = f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"
    return f'<section id="nodes"><h2>Nodes</h2>{table}</section>'


def _settings_section(job: JobConfig, redact: Redactor) -> str:
    inputs = "<br>".join(
        f"{escape(name)}: <code>{escape(redact(b.uri))}</code> ({escape(b.kind)}, {escape(b.mode)})"
        for name, b in job.inputs.items()
    )
    outputs = "<br>".join(f"{escape(name)}: <code>{escape(redact(uri))}</code>" for name, uri in job.outputs.items())
    env_names = ", ".join(escape(name) for name in sorted(job.environment_variables))
    job_rows = [
        ("Job id", f"<code>{escape(job.job_id)}</code>"),
        ("Entry script", f"<code>{escape(job.entry_script)}</code>"),
        ("Code", f"<code>{escape(redact(job.code_uri))}</code> {escape(job.code_hash[:12])}"),
        ("Arguments", f"<code>{escape(' '.join(redact.args(job.args)))}</code>" if job.args else NONE),
        ("Inputs", inputs or NONE),
        ("Mini-batched inputs", escape(", ".join(job.input_data)) or NONE),
        ("Outputs", outputs or NONE),
        ("Output data", (escape(job.output_data) if job.output_data else NONE)),
        ("Output location", f"<code>{escape(redact(job.output_uri))}</code>"),
        ("Job store", f"<code>{escape(redact(job.store_uri))}</code>"),
        ("Environment variables (names only)", env_names or NONE),
    ]
    settings = job.settings.model_dump()
    set_rows = [(escape(k), f"<code>{escape(_value(v))}</code>") for k, v in settings.items()]
    return (
        '<section id="settings"><h2>Job and settings</h2><div class="split">'
        f"{_kv_table(job_rows)}{_kv_table(set_rows)}</div></section>"
    )


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _value(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int | float) else NONE


def _seconds(value: float | None) -> str:
    if value is None:
        return NONE
    if value < 120:
        return f"{value:,.2f} s"
    if value < 7200:
        return f"{value / 60:,.1f} min"
    return f"{value / 3600:,.1f} h"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{value} B"
        size /= 1024
    return f"{value} B"


def _when(epoch: float | None) -> str:
    if not epoch:
        return NONE
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
