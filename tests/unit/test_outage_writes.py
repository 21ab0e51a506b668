"""The coordinator's writes at the end of a job wait out a store that does not answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import StorageError
from common.storage import StoreUnreachable, outage
from common.storage.outage import wait_out
from coordinator.follow.tally import Tally
from coordinator.report import trylog as trylog_module
from coordinator.report.trylog import TryLog


class Flaky:
    """Fails `failures` calls with `error`, then returns how many calls it took."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.error = error or StoreUnreachable("cannot reach S3 endpoint http://s3 for s3://b/logs/x")

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []
    monkeypatch.setattr(outage.time, "sleep", delays.append)
    return delays


@pytest.mark.parametrize(
    ("failures", "patience", "calls", "raises"),
    [
        (0, 300.0, 1, None),
        (3, 300.0, 4, None),  # waited out: 0.5, 1, 2 s
        (10, 300.0, 11, None),  # the backoff stops growing at 8 s
        (10, 2.0, 3, StoreUnreachable),  # 0.5 + 1 s waited; 2 s more would pass its patience
    ],
)
def test_wait_out(slept: list[float], failures: int, patience: float, calls: int, raises: type | None) -> None:
    step = Flaky(failures)
    if raises is None:
        assert wait_out(step, "writing", patience) == calls
    else:
        with pytest.raises(raises):
            wait_out(step, "writing", patience)
    assert step.calls == calls
    assert slept == [min(0.5 * 2**i, 8.0) for i in range(len(slept))]


def test_wait_out_does_not_retry_other_errors(slept: list[float]) -> None:
    step = Flaky(1, StorageError("access denied to s3://b/logs (AccessDenied)"))
    with pytest.raises(StorageError, match="access denied"):
        wait_out(step, "writing")
    assert step.calls == 1 and slept == []


class FlakyStore:
    """Uploads fail while `down`; what was uploaded is kept by URI."""

    def __init__(self) -> None:
        self.down = True
        self.uploaded: dict[str, str] = {}

    def upload(self, source: Path, uri: str) -> None:
        if self.down:
            self.down = False
            raise StoreUnreachable(f"cannot reach S3 endpoint http://s3 for {uri}")
        self.uploaded[uri] = source.read_text()


def test_placing_the_logs_again_after_an_outage_adds_extra_errors_once(
    slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FlakyStore()
    monkeypatch.setattr(trylog_module, "open_storage", lambda uri, options: store)
    trylog = TryLog(Tally(1).tries_of)
    extra = {("n1", "init.txt"): "init() failed: boom\n"}
    wait_out(lambda: trylog.place("s3://b/out/logs", None, extra), "writing the logs")  # type: ignore[arg-type]
    assert len(slept) == 1
    assert store.uploaded["s3://b/out/logs/sys/error/n1/init.txt"] == "init() failed: boom\n"
    assert set(store.uploaded) >= {"s3://b/out/logs/sys/job_report/attempts.csv"}
    assert not trylog.folder.exists()
