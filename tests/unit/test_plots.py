"""The report's SVG plots: well-formed XML, escaped user text, empty data, bounded size, no matplotlib."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from common.messages import BatchResult, JobConfig, Outcome
from common.perf import PerfSample
from common.settings import RunSettings
from coordinator.report import plots, svg
from coordinator.report.digest import TryDigest
from coordinator.report.html import render_report
from coordinator.report.renderer import ReportRenderer

T0 = 1_700_000_000.0
HOSTILE = "<script>&\"'x\x01"
NS = "{http://www.w3.org/2000/svg}"


def record(
    i: int, node: str = "n", proc: str = "p", seconds: float = 0.5, outcome: Outcome = "committed"
) -> BatchResult:
    return BatchResult(
        job_id="j", batch_id=i, node_id=node, process=proc, attempt=1, outcome=outcome, total=4,
        succeeded=4 if outcome == "committed" else 0, failed=0, started=T0 + i * 0.01, seconds=seconds,
        download_seconds=seconds * 0.2, run_seconds=seconds * 0.6, commit_seconds=seconds * 0.1,
    )  # fmt: skip


def records(n: int, nodes: int = 4) -> list[BatchResult]:
    return [
        record(
            i, f"node-{i % nodes}", f"p{i % 2}", 0.2 + (i * 7919 % 1000) / 700, "retry" if i % 53 == 0 else "committed"
        )
        for i in range(n)
    ]


def samples(nodes: list[str], count: int = 20) -> list[PerfSample]:
    return [
        PerfSample(
            at=T0 + t, node_id=node, cpu_percent=10 + t % 80, memory_percent=1, rss_bytes=(100 + t) * 2**20,
            process_count=2,
        )
        for t in range(count)
        for node in nodes
    ]  # fmt: skip


def digest(recs: list[BatchResult]) -> TryDigest:
    return TryDigest.of(recs, T0)


def all_plots(recs: list[BatchResult], perf: list[PerfSample]) -> dict[str, str]:
    tries = digest(recs)
    return {
        "throughput": plots.throughput_svg(tries),
        "timeline": plots.timeline_svg(tries),
        "durations": plots.durations_svg(tries),
        "resources": plots.resources_svg(perf, T0),
    }


def parse(doc: str) -> ET.Element:
    root = ET.fromstring(doc)
    assert root.tag == f"{NS}svg"
    assert root.get("class") == "plot" and root.get("role") == "img"
    assert re.fullmatch(r"0 0 900 [0-9.]+", root.get("viewBox") or "")
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def test_esc_makes_any_text_safe_xml() -> None:
    escaped = svg.esc(HOSTILE)
    assert escaped == "&lt;script&gt;&amp;&quot;&#x27;x\ufffd"
    node = ET.fromstring(f'<t a="{escaped}">{escaped}</t>')
    assert node.text == node.get("a") == "<script>&\"'x\ufffd"


@pytest.mark.parametrize(
    ("low", "high", "target", "expected"),
    [
        (0, 50, 8, [0, 10, 20, 30, 40, 50]),
        (0, 1.3, 6, [0, 0.25, 0.5, 0.75, 1.0, 1.25]),
        (0, 105, 5, [0, 25, 50, 75, 100]),
        (0.6, 1.9, 6, [0.75, 1.0, 1.25, 1.5, 1.75]),
        (0, 0, 5, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ],
)
def test_ticks_are_round_and_inside(low: float, high: float, target: int, expected: list[float]) -> None:
    assert svg.ticks(low, high, target) == pytest.approx(expected)


def test_integer_ticks_and_labels() -> None:
    assert svg.ticks(0, 3, 6, integer=True) == [0, 1, 2, 3]
    assert svg.upper(13, 5, integer=True) == 15
    assert svg.upper(0) == 1.0
    assert svg.tick_labels([0.0, 0.25, 0.5]) == ["0.00", "0.25", "0.50"]
    assert svg.tick_labels([0.0, 5000.0, 10000.0]) == ["0", "5,000", "10,000"]


@pytest.mark.parametrize("count", [1, 2, 2001, plots.NUMPY_FROM + 1])
def test_percentiles_match_numpy(count: int) -> None:
    values = [(i * 7919 % 1013) / 17 for i in range(count)]
    qs = [5, 25, 50, 75, 95, 99]
    assert plots.percentiles(values, qs) == pytest.approx(np.percentile(values, qs).tolist())


def test_percentiles_of_nothing() -> None:
    assert plots.percentiles([], [50, 99]) == [0.0, 0.0]


def test_every_plot_is_valid_xml_with_hostile_node_ids() -> None:
    recs = [record(i, HOSTILE if i % 2 else "ok-node", HOSTILE, 0.3 + i % 5 * 0.1) for i in range(50)]
    recs.append(record(99, HOSTILE, "", 0.4, outcome="failed"))
    docs = all_plots(recs, samples([HOSTILE, "ok-node"]))
    for name, doc in docs.items():
        assert "<script" not in doc, name
        root = parse(doc)
        assert root.get("id") == f"plot-{name}"
    lanes = texts(parse(docs["timeline"]))
    assert any(t.startswith("<script>&\"'x\ufffd/<script>") for t in lanes)
    assert "<script>&\"'x\ufffd" in texts(parse(docs["resources"]))


def test_empty_data_says_so() -> None:
    for name, doc in all_plots([], []).items():
        shown = texts(parse(doc))
        assert shown[1] in {"No batches ran.", "No resource samples were recorded."}, name


def test_one_instant_try_and_zero_phases() -> None:
    recs = [record(0, seconds=0.0)]
    for doc in all_plots(recs, samples(["n"], 1)).values():
        root = parse(doc)
        assert all("nan" not in (el.get("d") or "") + (el.get("x") or "") for el in root.iter())
    assert "median 0 ms" in texts(parse(plots.durations_svg(digest(recs))))


def test_throughput_bins_and_failed_line() -> None:
    recs = [record(i, seconds=0.5) for i in range(100)]  # ends from 0.5 s to 1.49 s
    recs.append(record(100, seconds=0.5, outcome="retry"))
    root = parse(plots.throughput_svg(digest(recs)))
    shown = texts(root)
    assert "Throughput: items/s (bins of 100 ms)" in shown
    assert "failed tries" in shown and "seconds since start" in shown
    assert len(root.findall(f"{NS}path[@stroke='{plots.OUTCOME_COLORS['failed']}']")) == 2  # the line and its key


def test_durations_fold_stragglers_into_last_bin() -> None:
    recs = [record(i, seconds=1.0 + (i % 10) / 10) for i in range(500)]
    recs += [record(1000, seconds=600.0), record(1001, seconds=900.0)]
    shown = texts(parse(plots.durations_svg(digest(recs))))
    assert "seconds (2 longer tries counted in the last bin)" in shown
    assert "Phases of 502 tries" in shown


def test_timeline_samples_and_lane_labels_are_bounded() -> None:
    recs = records(5000, nodes=300)
    root = parse(plots.timeline_svg(digest(recs)))
    assert len(root.findall(f".//{NS}rect")) == plots.MAX_BARS + 2  # bars, committed and retry keys
    lanes = len({plots.lane_of(r) for r in recs})
    assert lanes == 300
    shown = texts(root)
    assert shown[0] == "Timeline of tries per node / process (showing 3,000 of 5,000 tries, failed ones first)"
    assert sum(t.startswith("node-") for t in shown) == 50  # every 6th lane is named


def test_resources_legend_stops_at_twelve_nodes() -> None:
    nodes = [f"node-{i:02d}" for i in range(20)]
    root = parse(plots.resources_svg(samples(nodes, 2000), T0))
    shown = texts(root)
    assert sum(t in nodes for t in shown) == plots.MAX_LEGEND_NODES
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 40
    assert all(len((p.get("points") or "").split()) == plots.MAX_POINTS for p in lines)


def test_huge_job_stays_small_and_fast() -> None:
    recs = records(20_000, nodes=16) * 10  # 200,000 tries; repeats keep building them cheap
    perf = samples([f"node-{i}" for i in range(16)], 2000)
    began = time.perf_counter()
    docs = all_plots(recs, perf)
    elapsed = time.perf_counter() - began
    for name, doc in docs.items():
        parse(doc)
        assert len(doc) < 1_000_000, name
    assert sum(len(d) for d in docs.values()) < 1_000_000
    assert elapsed < 15  # ~0.6 s on a quiet 2-core box; generous for a busy CI


def renderer_job() -> JobConfig:
    return JobConfig(
        job_id="j", name="renderer", created_at=T0, code_uri="/tmp/c", entry_script="s.py",
        output_uri="/tmp/o", store_uri="/tmp/s", settings=RunSettings(),
    )  # fmt: skip


def test_renderer_renders_in_process() -> None:
    job = renderer_job()
    recs, perf = records(30), samples(["node-0"])
    summary = {"state": "succeeded", "started": T0, "finished": T0 + 2}
    renderer = ReportRenderer()
    with pytest.raises(RuntimeError):
        renderer.result()
    renderer.request(job, digest(recs), summary, perf)
    perf.append(samples(["late-node"], 1)[0])  # the request keeps its own copy
    html = renderer.result(timeout=30)
    renderer.close()
    assert html == render_report(job, digest(recs), summary, perf[:-1])
    assert "late-node" not in html


def test_renderer_renders_the_latest_request_and_raises_what_rendering_raised() -> None:
    job = renderer_job()
    recs, perf = records(30), samples(["node-0"])
    renderer = ReportRenderer()
    renderer.request(job, digest(recs), {"state": "failed", "started": T0, "finished": T0 + 2}, perf)
    latest = {"state": "succeeded", "started": T0, "finished": T0 + 2, "rejected": {"forged report": 1}}
    renderer.request(job, digest(recs), latest, perf)  # the summary changed while the first rendered
    assert renderer.result(timeout=30) == render_report(job, digest(recs), latest, perf)
    renderer.request(job, None, latest, perf)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        renderer.result(timeout=30)


def test_no_matplotlib_import() -> None:
    code = (
        "import sys\n"
        "from tests.unit.test_plots import all_plots, records, samples\n"
        "import coordinator.report.renderer, coordinator.report.write\n"
        "all_plots(records(100), samples(['a']))\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
