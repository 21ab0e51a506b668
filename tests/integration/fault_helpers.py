"""Fleet fault helpers shared by test_fleet_faults_* and test_security: gated code, background run, S3 reads."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_helpers import COMPONENT, fleet_env, run_cli, stop, wait_for
from tests.servers import MotoS3

# run() writes "<name>.done" per item (the side effect tests look for) and returns "<name> <text>".
# The batch holding GATE_ITEM writes `started` and waits for `go`, so a test can act mid-job.
GATED_ENTRY = """\
import os
import time
from pathlib import Path

from azureml_user.parallel_run import EntryScript

GATE = Path({gate!r})
GATE_ITEM = {gate_item!r}


def init():
    global out
    out = EntryScript().output_dir


def run(mini_batch):
    names = [os.path.basename(path) for path in mini_batch]
    if GATE_ITEM in names:
        (GATE / "started").write_text("1")
        deadline = time.monotonic() + 90
        while not (GATE / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    rows = []
    for path in mini_batch:
        name = os.path.basename(path)
        with open(path) as handle:
            text = handle.read().strip()
        with open(os.path.join(out, name + ".done"), "w") as handle:
            handle.write(text)
        rows.append(f"{{name}} {{text}}")
    return rows
"""


PASSWORD_WARNING = "the broker password given with --broker is visible"


@dataclass
class Gate:
    """A folder the entry script and the test meet in."""

    root: Path

    def wait_started(self, timeout: float = 60) -> None:
        assert wait_for(lambda: (self.root / "started").exists(), timeout), "the gated batch never started"

    def open(self) -> None:
        (self.root / "go").write_text("1")


def make_code(root: Path, gate: Path | None = None, gate_item: str = "") -> Path:
    """A component folder; with `gate`, run() pauses on the batch holding `gate_item`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "component.yaml").write_text(COMPONENT)
    gate_dir = str(gate) if gate is not None else str(root / "no-gate")
    (root / "entry.py").write_text(GATED_ENTRY.format(gate=gate_dir, gate_item=gate_item))
    return root / "component.yaml"


def put_items(s3: MotoS3, bucket: str, count: int, prefix: str = "in", stem: str = "item") -> list[str]:
    """`count` small objects <stem>000.txt... under `prefix`; returns their names."""
    client, name = s3.client(), bucket.removeprefix("s3://")
    names = [f"{stem}{i:03d}.txt" for i in range(count)]
    for i, item in enumerate(names):
        client.put_object(Bucket=name, Key=f"{prefix}/{item}", Body=f"value-{i}".encode())
    return names


def one_error_line(
    result: subprocess.CompletedProcess[str], warned: tuple[str, ...] = (), start: str = "batchfleet: error: "
) -> str:
    """The single line the CLI printed for an error; fails on tracebacks or extra lines (but for the
    broker password warning and the `warned` ones)."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    # Tests pass the broker URL with its password on the command line, which is warned about.
    expected = (PASSWORD_WARNING, *warned)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not any(w in line for w in expected)]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def job_ids(s3: MotoS3, store: str) -> list[str]:
    """Job ids with an area under an s3:// store (`_code/` holds the shared code snapshots)."""
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/", Delimiter="/")
    names = [p["Prefix"][len(prefix) + 1 :].rstrip("/") for p in listed.get("CommonPrefixes", [])]
    return [name for name in names if name != "_code"]


def read_text(s3: MotoS3, uri: str) -> str:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return str(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def done_files(s3: MotoS3, output: str) -> set[str]:
    bucket, _, prefix = output.removeprefix("s3://").partition("/")
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return {
        o["Key"].rsplit("/", 1)[1] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".done")
    }


class Coordinator:
    """`batchfleet run` in the background, its output in files (a pipe could fill and stall it)."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out, self.err = log_dir / "run.out", log_dir / "run.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchfleet", "run", *args],
                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def finish(self, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(self.proc)
            pytest.fail(f"the coordinator did not finish in {timeout:.0f}s:\n{self.err.read_text()}")
        return subprocess.CompletedProcess(self.proc.args, code, self.out.read_text(), self.err.read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)


def fleet_setup(tmp_path: Path, url: str, s3: MotoS3, **env: str) -> dict[str, Any]:
    """A bucket, an S3 store and output, a gate folder, and the environment for fleet processes."""
    bucket = s3.make_bucket()
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {"BATCHFLEET_STORE": f"{bucket}/store", **env}  # workers take jobs from this store
    return {
        "bucket": bucket, "store": f"{bucket}/store", "output": f"{bucket}/out", "gate": Gate(gate),
        "env": fleet_env(s3.endpoint_url, **env), "url": url,
    }  # fmt: skip


def fleet_run_args(spec: Path, f: dict[str, Any], *extra: str) -> list[str]:
    return [
        str(spec), "--broker", f["url"], "--store", f["store"], "--input", f"data={f['bucket']}/in",
        "--output", f"out={f['output']}", "--no-progress", "--run_invocation_timeout", "120", *extra,
    ]  # fmt: skip


def publish_raw(url: str, queue: str, bodies: list[bytes], headers: dict[str, str] | None = None) -> None:
    """Publish straight to a queue with pika, as someone outside batchfleet would."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2, headers=headers)
        for body in bodies:
            channel.basic_publish("", queue, body, properties, mandatory=True)
    finally:
        connection.close()


def follower_log(job: str) -> Path:
    """Where `run --detach` sends its background follower's output."""
    return Path(tempfile.gettempdir()) / f"batchfleet-{job}.log"


def wait_for_state(job: str, store: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Poll `batchfleet status --json` until the job is no longer running."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        result = run_cli("status", job, "--store", store, "--json", env=env, timeout=60)
        if result.returncode in (0, 1, 3, 4):  # status exits with the job state (README, "Exit codes")
            state = json.loads(result.stdout)
            if state.get("state") not in (None, "running", "submitted"):
                return state
        time.sleep(1)
    pytest.fail(f"job {job} still not decided after {timeout:.0f}s: {state}")
