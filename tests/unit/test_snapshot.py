"""Code snapshots: ignore files, bound data left out, limits, content addressing, the node's copy."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from common.errors import UsageError
from common.messages import JobConfig
from common.settings import RunSettings, parse_snapshot_limit
from common.signing import snapshot_digest
from common.storage import StorageOptions
from coordinator.plan.snapshot import select_code, snapshot_code
from worker.download.snapshot import SnapshotError, code_cache, fetch_code, remove_tree

OPTIONS = StorageOptions()


def code_folder(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "entry.py").write_text("def run(mini_batch):\n    return mini_batch\n")
    (root / "pkg" / "helper.py").write_text("X = 1\n")
    (root / "data").mkdir()
    for i in range(5):
        (root / "data" / f"img{i}.png").write_bytes(b"x" * 100)
    (root / "notes.log").write_text("log\n")
    return root


def names(root: Path, bound: list[str] | None = None) -> set[str]:
    return {rel for rel, _, _ in select_code(root, bound or []).files}


def test_amlignore_is_honoured(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    (root / ".amlignore").write_text("data/\n*.log\n")
    assert names(root) == {".amlignore", "entry.py", "pkg/helper.py"}


def test_gitignore_applies_only_without_amlignore(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    (root / ".gitignore").write_text("*.log\n")
    assert "notes.log" not in names(root) and "data/img0.png" in names(root)
    (root / ".amlignore").write_text("data/\n")
    found = names(root)
    assert "notes.log" in found and "data/img0.png" not in found  # .amlignore replaces .gitignore


def test_batchfleetignore_adds_to_either(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    (root / ".gitignore").write_text("*.log\n")
    (root / ".batchfleetignore").write_text("data/\n!data/img1.png\n")
    assert names(root) == {".gitignore", ".batchfleetignore", "entry.py", "pkg/helper.py"}


def test_bound_data_inside_the_code_folder_is_left_out(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    found = names(root, [str(root / "data"), str(root / "notes.log"), "s3://bucket/x", str(tmp_path / "elsewhere")])
    assert found == {"entry.py", "pkg/helper.py"}


def test_bytecode_and_version_control_never_travel(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "entry.cpython-311.pyc").write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    assert not any(n.startswith((".git/", "__pycache__/")) for n in names(root))


def test_over_the_limit_is_one_line_naming_the_biggest_folder(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    with pytest.raises(UsageError) as caught:
        snapshot_code(root, str(tmp_path / "store"), OPTIONS, limit="4")
    line = caught.value.line()
    assert "\n" not in line
    assert "8 files" in line and "data/ (5 files" in line and str(root / ".amlignore") in line
    assert "--snapshot-limit" in line
    (root / ".gitignore").write_text("*.tmp\n")
    with pytest.raises(UsageError) as again:
        snapshot_code(root, str(tmp_path / "store"), OPTIONS, limit="4")
    assert str(root / ".batchfleetignore") in again.value.line()
    with pytest.raises(UsageError, match="over the limit"):
        snapshot_code(root, str(tmp_path / "store"), OPTIONS, limit="200B")
    snapshot_code(root, str(tmp_path / "store"), OPTIONS, limit="1MB,100")  # raised: fine


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, (300 * 1024**2, 2000)),
        ("1GB", (1024**3, 2000)),
        ("5000", (300 * 1024**2, 5000)),
        ("5000 files", (300 * 1024**2, 5000)),
        ("1GB,5000", (1024**3, 5000)),
    ],
)
def test_snapshot_limit_forms(text: str | None, expected: tuple[int, int]) -> None:
    assert parse_snapshot_limit(text) == expected


def test_a_bad_snapshot_limit_is_refused_as_a_setting() -> None:
    with pytest.raises(ValueError, match="not a size"):
        RunSettings(snapshot_limit="lots")


def test_same_code_is_stored_once(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    store = tmp_path / "store"
    uri, digest, _ = snapshot_code(root, str(store), OPTIONS)
    assert Path(uri) == store / "_code" / digest
    stamp = (store / "_code" / digest / "entry.py").stat().st_mtime_ns
    time.sleep(0.01)
    again, digest2, _ = snapshot_code(root, str(store), OPTIONS)
    assert (again, digest2) == (uri, digest)
    assert (store / "_code" / digest / "entry.py").stat().st_mtime_ns == stamp  # nothing uploaded again
    (root / "entry.py").write_text("def run(mini_batch):\n    return []\n")
    assert snapshot_code(root, str(store), OPTIONS)[1] != digest


def job_for(uri: str, digest: str) -> JobConfig:
    return JobConfig(
        job_id="j1", name="j", created_at=0.0, code_uri=uri, code_hash=digest, entry_script="entry.py",
        output_uri="/tmp/out", store_uri="/tmp/store/j1", settings=RunSettings(),
    )  # fmt: skip


@pytest.mark.skipif(os.name != "posix", reason="symlinks need privileges on Windows")
def test_a_symlinked_folder_travels_and_digests_the_same(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "util.py").write_text("Y = 2\n")
    root = code_folder(tmp_path / "code")
    (root / "lib").symlink_to(shared, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # a loop is walked once
    uri, digest, selection = snapshot_code(root, str(tmp_path / "store"), OPTIONS)
    assert "lib/util.py" in {rel for rel, _, _ in selection.files}
    work = tmp_path / "work"
    job = job_for(uri, digest)
    assert fetch_code(job, code_cache(work, job), OPTIONS)
    assert (code_cache(work, job) / "lib" / "util.py").read_text() == "Y = 2\n"


def test_a_node_keeps_one_read_only_copy_per_hash(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    uri, digest, _ = snapshot_code(root, str(tmp_path / "store"), OPTIONS)
    work = tmp_path / "work"
    job = job_for(uri, digest)
    copy = code_cache(work, job)
    assert copy == work / "code" / digest
    assert fetch_code(job, copy, OPTIONS) is True
    assert fetch_code(job.model_copy(update={"job_id": "j2"}), copy, OPTIONS) is False  # cached
    assert snapshot_digest(copy) == digest
    for path in (copy, copy / "entry.py", copy / "pkg", copy / "pkg" / "helper.py"):
        assert not stat.S_IMODE(path.stat().st_mode) & 0o222, path
    remove_tree(work)
    assert not work.exists()


def test_a_copy_another_process_made_meanwhile_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes under one id share a work root: the second to finish its download keeps the first's copy."""
    from worker.download import snapshot

    root = code_folder(tmp_path / "code")
    uri, digest, _ = snapshot_code(root, str(tmp_path / "store"), OPTIONS)
    job = job_for(uri, digest)
    copy = code_cache(tmp_path / "work", job)
    download = snapshot._download

    def racing(job: JobConfig, folder: Path, options: StorageOptions) -> None:
        download(job, copy, options)  # the other process's copy lands first
        download(job, folder, options)

    monkeypatch.setattr(snapshot, "_download", racing)
    assert fetch_code(job, copy, OPTIONS) is True
    assert snapshot_digest(copy) == digest
    assert [p.name for p in copy.parent.iterdir()] == [digest]  # our partial copy is gone


def test_a_changed_snapshot_is_refused_and_not_cached(tmp_path: Path) -> None:
    root = code_folder(tmp_path / "code")
    uri, digest, _ = snapshot_code(root, str(tmp_path / "store"), OPTIONS)
    (Path(uri) / "entry.py").write_text("import os\n")
    job = job_for(uri, digest)
    with pytest.raises(SnapshotError, match="does not match its hash"):
        fetch_code(job, code_cache(tmp_path / "work", job), OPTIONS)
    assert not (tmp_path / "work" / "code").exists() or not any((tmp_path / "work" / "code").iterdir())


def test_a_missing_snapshot_is_refused(tmp_path: Path) -> None:
    job = job_for(str(tmp_path / "store" / "_code" / "abc"), "abc")
    with pytest.raises(SnapshotError, match="missing"):
        fetch_code(job, code_cache(tmp_path / "work", job), OPTIONS)


def test_embedded_jobs_run_the_folder_in_place(tmp_path: Path) -> None:
    job = job_for(str(tmp_path / "code"), "")
    assert code_cache(tmp_path / "work", job) == tmp_path / "code"
    assert fetch_code(job, tmp_path / "code", OPTIONS) is False


def test_a_refused_submission_takes_back_only_a_snapshot_it_stored(tmp_path: Path) -> None:
    from coordinator.plan.snapshot import forget_snapshot

    root = code_folder(tmp_path / "code")
    store = tmp_path / "store"
    _, digest, first = snapshot_code(root, str(store), OPTIONS)
    assert first.uploaded and not snapshot_code(root, str(store), OPTIONS)[2].uploaded
    forget_snapshot(str(store), digest, OPTIONS)
    assert not any(store.iterdir())
