"""The HTML report in a real browser: headless Chromium loads it offline, shows its plots, logs no errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from common.messages import BatchResult, JobConfig
from common.perf import PerfSample
from common.settings import RunSettings
from coordinator.report.digest import TryDigest
from coordinator.report.html import write_report

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Any name lookup fails: a page that needs the network shows it in the net log and renders broken.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def run_chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    command = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"chromium exited {result.returncode}: {result.stderr[-2000:]}"
    return result


def console_messages(stderr: str) -> list[str]:
    """Console output of the page (Chromium logs every level as INFO:CONSOLE with --enable-logging)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def page_requests(net_log: Path) -> list[str]:
    """http(s) URLs the page itself asked for; Chromium's own background requests are not the page's."""
    text = net_log.read_text(encoding="utf-8", errors="replace")
    try:
        events = json.loads(text)["events"]
    except (ValueError, KeyError):
        # A log cut short by the exit still names each request's URL and isolation key.
        pattern = r'"network_isolation_key":"file://[^"]*".{0,400}?"url":"(https?://[^"]+)"'
        return re.findall(pattern, text)
    by_source: dict[int, dict[str, str]] = {}
    for event in events:
        params = event.get("params") or {}
        seen = by_source.setdefault(event["source"]["id"], {})
        for key in ("url", "network_isolation_key"):
            if key in params:
                seen[key] = str(params[key])
    return sorted(
        {
            s["url"]
            for s in by_source.values()
            if s.get("url", "").startswith(("http://", "https://")) and "file://" in s.get("network_isolation_key", "")
        }
    )


def load(binary: str, tmp: Path, page: Path) -> tuple[str, list[str], list[str]]:
    """The page's DOM after load, its console messages and its network requests."""
    net_log = tmp / f"net-{page.stem}.json"
    result = run_chromium(
        binary,
        tmp,
        "--enable-logging=stderr",
        "--v=0",
        f"--log-net-log={net_log}",
        "--dump-dom",
        page.as_uri(),
    )
    return result.stdout, console_messages(result.stderr), page_requests(net_log)


def synthetic() -> tuple[JobConfig, TryDigest, dict[str, object], list[PerfSample]]:
    job = JobConfig(
        job_id="job-browser",
        name="report in a browser",
        created_at=T0,
        code_uri="/tmp/code",
        entry_script="score.py",
        output_uri="/tmp/out",
        store_uri="/tmp/store/job-browser",
        settings=RunSettings(mini_batch_size=4),
        environment_variables={"API_TOKEN": "not-to-be-shown"},
    )
    records = []
    for i in range(120):
        bad = i % 17 == 5
        records.append(
            BatchResult(
                job_id=job.job_id, batch_id=i, node_id=f"node-{i % 3}", process=f"p{i % 2}",
                attempt=1, outcome="retry" if bad else "committed", total=4, succeeded=0 if bad else 4,
                started=T0 + 1 + i * 0.4, seconds=0.6 + (i % 9) * 0.15, download_seconds=0.1,
                run_seconds=0.4 + (i % 9) * 0.12, commit_seconds=0.03,
                error="disk <full>" if bad else None, error_type="OSError" if bad else None,
                traceback="Traceback (most recent call last):\nOSError: disk <full>" if bad else None,
            )
        )  # fmt: skip
    perf = [
        PerfSample(
            at=T0 + t, node_id=f"node-{n}", cpu_percent=20 + (t * 11 + n * 13) % 70,
            memory_percent=2.0, rss_bytes=(300 + t * 2 + n * 50) * 1024**2, process_count=3,
        )
        for t in range(0, 50, 2)
        for n in range(3)
    ]  # fmt: skip
    summary: dict[str, object] = {
        "state": "succeeded", "reason": None, "started": T0, "finished": T0 + 50,
        "batches_total": 120, "batches_committed": 120, "batches_failed": 0,
        "items_total": 480, "items_succeeded": 480, "items_failed": 0, "reused": 0,
    }  # fmt: skip
    return job, TryDigest.of(records, T0), summary, perf


def test_report_loads_offline_with_plots_and_no_errors(chromium: str, tmp_path: Path) -> None:
    page = write_report(tmp_path / "logs" / "report.html", *synthetic())
    dom, console, requests = load(chromium, tmp_path, page)
    assert dom.count("<svg") == 4
    assert len(re.findall(r'<svg[^>]*class="plot"', dom)) == 4
    # Axis titles and legends are SVG text, so they are in the DOM (and selectable, searchable).
    for label in ("seconds since start", "failed tries", "Phases of 113 tries", "node-2/p1", "MiB"):
        assert label in dom, label
    for section in ("summary", "plots", "failures", "slowest", "nodes", "settings"):
        assert f'id="{section}"' in dom
    assert "disk &lt;full&gt;" in dom
    assert "not-to-be-shown" not in dom
    assert console == []
    assert requests == []


def test_report_screenshot(chromium: str, tmp_path: Path) -> None:
    page = write_report(tmp_path / "report.html", *synthetic())
    shot = tmp_path / "report.png"
    run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri())
    assert shot.stat().st_size > 50_000
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        # A blank or error page has a handful of colours; plots and text have many.
        colours = image.convert("RGB").resize((320, 1000)).getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 200
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(shot, artifacts / "report.png")


def test_checks_catch_a_broken_page(chromium: str, tmp_path: Path) -> None:
    """The console and network checks above are not vacuous: a bad page trips both."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="https://example.invalid/x.png">'
        "<script>missingFunction();</script></body></html>",
        encoding="utf-8",
    )
    _, console, requests = load(chromium, tmp_path, page)
    assert any("missingFunction is not defined" in line for line in console)
    assert requests == ["https://example.invalid/x.png"]
