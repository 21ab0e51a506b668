"""The HTML report: sections, inline plots, failure groups, escaping, no secrets, no network."""

from __future__ import annotations

import re
import time
from pathlib import Path

from common.messages import BatchResult, JobConfig
from common.perf import PerfSample
from common.settings import RunSettings
from coordinator.report import plots
from coordinator.report.digest import TryDigest
from coordinator.report.html import render_report, write_report

T0 = 1_700_000_000.0
SECRET = "hunter2-very-secret-value"
XSS = "<script>alert('x')</script>"


def make_job(**extra: object) -> JobConfig:
    return JobConfig(
        job_id="job-<1>",
        name="digits & <friends>",
        created_at=T0 - 5,
        code_uri="/tmp/code",
        entry_script="score.py",
        args=["--model", "m.pkl", "--api-key", SECRET, "--token=" + SECRET],
        output_uri="s3://user:pw@bucket/out",
        store_uri="/tmp/store/job-1",
        settings=RunSettings(mini_batch_size=2, run_max_try=3),
        environment_variables={"STORAGE_SECRET": SECRET, "MODE": "fast"},
        **extra,  # type: ignore[arg-type]
    )


def try_(batch: int, node: str, proc: str, start: float, seconds: float, **kw: object) -> BatchResult:
    fields: dict[str, object] = {
        "job_id": "job-1",
        "batch_id": batch,
        "node_id": node,
        "process": proc,
        "attempt": 1,
        "outcome": "committed",
        "total": 2,
        "succeeded": 2,
        "started": start,
        "seconds": seconds,
        "download_seconds": seconds * 0.2,
        "run_seconds": seconds * 0.7,
        "commit_seconds": seconds * 0.05,
    }
    fields.update(kw)
    return BatchResult.model_validate(fields)


def synthetic_records() -> list[BatchResult]:
    """Two nodes, two processes each; a flaky batch retried, a batch failed for good, an XSS message."""
    records = []
    lanes = [("node-a", "p0"), ("node-a", "p1"), ("node-b", "p0"), ("node-b", "p1")]
    for i in range(40):
        node, proc = lanes[i % 4]
        records.append(try_(i, node, proc, T0 + 1 + i * 0.5, 1.0 + (i % 7) * 0.3))
    tb = 'Traceback (most recent call last):\n  File "score.py", line 9, in run\nValueError: bad row 3\n'
    for attempt, outcome in ((1, "retry"), (2, "retry"), (3, "failed")):
        records.append(
            try_(
                40, "node-b", "p1", T0 + 25 + attempt, 0.8, attempt=attempt, outcome=outcome, succeeded=0,
                failed=2, error="bad row 3\nmore detail", error_type="ValueError", traceback=tb,
            )
        )  # fmt: skip
    records.append(
        try_(
            41, "node-a", "p0", T0 + 26, 0.5, outcome="retry", succeeded=0, error=XSS,
            error_type="RuntimeError", traceback="Traceback...\nRuntimeError: " + XSS,
        )
    )  # fmt: skip
    records.append(try_(41, "node-a", "p1", T0 + 27, 0.6, attempt=2))
    records.append(
        try_(
            42, "node-a", "p0", T0 + 28, 0.5, outcome="retry", succeeded=0,
            error="bad row 3", error_type="ValueError", traceback=tb,
        )
    )  # fmt: skip
    records.append(try_(42, "node-a", "p0", T0 + 29, 0.5, attempt=2))
    return records


def synthetic_perf() -> list[PerfSample]:
    return [
        PerfSample(
            at=T0 + i,
            node_id=node,
            cpu_percent=30 + (i * 7 + k * 20) % 60,
            memory_percent=1.0 + k,
            rss_bytes=(200 + i * 3 + k * 100) * 1024**2,
            process_count=3,
        )
        for i in range(32)
        for k, node in enumerate(("node-a", "node-b"))
    ]


def summary_for(records: list[BatchResult], state: str = "failed") -> dict[str, object]:
    return {
        "state": state,
        "reason": "allowed_failed_count 0 exceeded: 1 batch failed <b>",
        "started": T0,
        "finished": T0 + 32,
        "batches_total": 43,
        "batches_committed": 42,
        "batches_failed": 1,
        "items_total": 86,
        "items_succeeded": 84,
        "items_failed": 2,
        "reused": 0,
    }


def render() -> str:
    records = synthetic_records()
    return render_report(make_job(), TryDigest.of(records, T0), summary_for(records), synthetic_perf())


def test_sections_and_plots_present() -> None:
    html = render()
    assert html.startswith("<!DOCTYPE html>")
    for anchor in ("summary", "plots", "failures", "slowest", "nodes", "settings"):
        assert f'id="{anchor}"' in html
    assert html.count("<svg") == 4
    assert html.count('class="plot"') == 4
    for label in ("Throughput", "Timeline", "Batch duration", "Resource use"):
        assert re.search(rf'aria-label="{label}[^"]*"', html), label
    assert "node-a" in html and "node-b" in html


def test_failure_groups_counts_and_batch_ids() -> None:
    groups = TryDigest.of(synthetic_records(), T0).failure_groups()
    assert [(g.error_type, g.message, g.tries) for g in groups] == [
        ("ValueError", "bad row 3", 4),
        ("RuntimeError", XSS, 1),
    ]
    assert groups[0].batches == {40, 42}
    assert groups[0].final == {40}
    html = render()
    row = html[html.index("<b>ValueError</b>") :]
    row = row[: row.index("</tr>")]
    assert '<td class="n">4</td><td class="n">2</td><td class="n">1</td>' in row
    assert '<div class="ids">40, 42</div>' in row
    assert "<details open><summary>First traceback (batch 40, try 1, node-b/p1)</summary>" in row
    assert "ValueError: bad row 3" in row


def test_user_text_is_escaped() -> None:
    html = render()
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "digits &amp; &lt;friends&gt;" in html
    assert "job-&lt;1&gt;" in html
    assert "exceeded: 1 batch failed &lt;b&gt;" in html


def test_no_secrets_in_report() -> None:
    html = render()
    assert SECRET not in html
    assert "STORAGE_SECRET" in html  # names are shown, values never
    assert "--api-key ***" in html and "--token=***" in html
    assert "user:pw" not in html and "s3://***@bucket/out" in html


def test_no_network_references() -> None:
    html = render()
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(script|link|img|iframe)\b", html)
    assert "@import" not in html and "url(http" not in html


def test_svg_ids_unique_across_plots() -> None:
    ids = re.findall(r'\sid="([^"]+)"', render())
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'href="#([^"]+)"', render()))
    assert refs <= set(ids)


def test_zero_records(tmp_path: Path) -> None:
    summary = {"state": "cancelled", "reason": None, "started": T0, "finished": T0 + 1}
    path = write_report(tmp_path / "logs" / "report.html", make_job(), TryDigest(T0), summary, [])
    html = path.read_text(encoding="utf-8")
    assert html.count("<svg") == 4
    assert "No try failed." in html and "No batches ran." in html and "No node reported." in html
    assert not list(tmp_path.glob("logs/*.tmp"))


def test_one_record() -> None:
    record = try_(0, "solo", "", T0 + 0.1, 0.02)
    html = render_report(make_job(), TryDigest.of([record], T0), summary_for([record], "succeeded"), [])
    assert html.count("<svg") == 4
    assert 'class="badge succeeded"' in html
    assert "<td>solo</td>" in html


def test_many_records_stay_small_and_fast() -> None:
    records = [
        try_(
            i, f"node-{i % 8}", f"p{i % 4}", T0 + i * 0.01, 0.5 + (i % 13) * 0.1,
            outcome="retry" if i % 97 == 0 else "committed",
            error="boom" if i % 97 == 0 else None, error_type="OSError" if i % 97 == 0 else None,
        )
        for i in range(100_000)
    ]  # fmt: skip
    began = time.perf_counter()
    tries = TryDigest.of(records, T0)
    html = render_report(make_job(), tries, summary_for(records, "succeeded"), synthetic_perf())
    elapsed = time.perf_counter() - began
    assert len(html) < 1_000_000
    assert "showing 3,000 of 100,000 tries, failed ones first" in html
    assert elapsed < 10  # ~0.4 s on a quiet 2-core box (plain SVG strings); generous for a busy CI
    assert len(plots.sample_tries(tries)) == plots.MAX_BARS


def test_sample_tries_keeps_failures() -> None:
    records = [try_(i, "n", "p", T0 + i, 1.0) for i in range(5000)]
    records += [try_(9000 + i, "n", "p", T0 + i, 1.0, outcome="failed") for i in range(10)]
    kept = plots.sample_tries(TryDigest.of(records, T0), 100)
    assert len(kept) == 100
    assert sum(r.outcome == "failed" for r in kept) == 10
