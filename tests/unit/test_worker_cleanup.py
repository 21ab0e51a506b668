"""Side inputs fetched once per node, and a worker that keeps its disk: rotation, sweeping, free disk."""

from __future__ import annotations

from pathlib import Path

from common.messages import InputBinding, JobConfig
from common.settings import RunSettings
from common.storage import StorageOptions
from worker.download.downloader import sweep_downloads
from worker.download.sideinputs import SideInput, fetch_one, localize_args, side_inputs
from worker.run.userlogs import RotatingFile, UserLogs


def job_with(inputs: dict[str, InputBinding]) -> JobConfig:
    return JobConfig(
        job_id="j", name="j", created_at=0.0, code_uri="/c", entry_script="e.py", inputs=inputs,
        input_data=["data"], output_uri="/o", store_uri="/s/j", settings=RunSettings(),
    )  # fmt: skip


def test_side_inputs_are_the_remote_unbatched_downloads() -> None:
    job = job_with({
        "data": InputBinding(name="data", uri="s3://b/in"),
        "model": InputBinding(name="model", uri="s3://b/m.pkl"),
        "ref": InputBinding(name="ref", uri="s3://b/ref", mode="direct"),
        "local": InputBinding(name="local", uri="/shared/x"),
        "table": InputBinding(name="table", uri="s3://b/t.parquet", kind="tabular", mode="direct"),
        "n": InputBinding(name="n", uri="3", kind="value", mode="direct"),
    })  # fmt: skip
    assert [b.name for b in side_inputs(job)] == ["model"]


def test_args_see_local_paths() -> None:
    fetched = [SideInput("model", "s3://b/m.pkl", Path("/w/inputs/k/m.pkl"), 9, 0.1, False),
               SideInput("dir", "s3://b/dir/", Path("/w/inputs/d"), 9, 0.1, True)]  # fmt: skip
    args = ["--model", "s3://b/m.pkl", "--dir=s3://b/dir", "--other", "s3://b/m.pkl2", "x=s3://b/m.pkl"]
    assert localize_args(args, fetched) == [
        "--model", "/w/inputs/k/m.pkl", "--dir=/w/inputs/d", "--other", "s3://b/m.pkl2", "x=/w/inputs/k/m.pkl",
    ]  # fmt: skip


def test_a_file_keeps_its_name_a_folder_comes_whole_and_both_are_cached(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "dir" / "sub").mkdir(parents=True)
    (source / "model.pkl").write_bytes(b"m" * 10)
    (source / "dir" / "a.txt").write_text("a")
    (source / "dir" / "sub" / "b.txt").write_text("bb")
    cache = tmp_path / "cache"
    one = fetch_one(InputBinding(name="model", uri=str(source / "model.pkl")), cache, StorageOptions())
    assert one.local.name == "model.pkl" and one.local.read_bytes() == b"m" * 10
    assert (one.size, one.cached) == (10, False)
    folder = fetch_one(InputBinding(name="dir", uri=str(source / "dir")), cache, StorageOptions())
    assert (folder.local / "sub" / "b.txt").read_text() == "bb" and folder.size == 3
    again = fetch_one(InputBinding(name="model", uri=str(source / "model.pkl")), cache, StorageOptions())
    assert again.cached and again.local == one.local
    assert "input model 10 bytes cached" == again.describe()
    own = fetch_one(
        InputBinding(name="model", uri=str(source / "model.pkl")), cache, StorageOptions(), tmp_path / "job"
    )
    assert own.local.is_relative_to(tmp_path / "job")  # no ETags: kept with the job, not across jobs
    (source / "model.pkl").write_bytes(b"changed")  # another size: another cache entry
    assert not fetch_one(InputBinding(name="model", uri=str(source / "model.pkl")), cache, StorageOptions()).cached


def test_user_logs_rotate_by_size(tmp_path: Path) -> None:
    log = RotatingFile(tmp_path / "p.stdout.txt", max_bytes=100, backups=2)
    for i in range(30):
        log.write(f"line {i:02d} {'x' * 20}\n")
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["p.stdout.txt", "p.stdout.txt.1", "p.stdout.txt.2"]
    assert all(p.stat().st_size <= 130 for p in tmp_path.iterdir())
    assert "line 29" in (tmp_path / "p.stdout.txt").read_text()


def test_error_files_rotate_too(tmp_path: Path) -> None:
    logs = UserLogs(tmp_path, "node", "process001", max_bytes=200, backups=1)
    for attempt in range(20):
        logs.error(1, attempt, "ValueError: boom", "Traceback ...\n" * 3)
    folder = tmp_path / "user" / "error" / "node"
    assert sorted(p.name for p in folder.iterdir()) == ["process001.txt", "process001.txt.1"]


def test_abandoned_download_folders_are_swept(tmp_path: Path) -> None:
    for job in ("a", "b"):
        (tmp_path / job / "batches" / "000000001-1").mkdir(parents=True)
    (tmp_path / "code" / "hash").mkdir(parents=True)
    assert sweep_downloads(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "code"]
    assert not any(tmp_path.glob("*/batches"))


def test_check_reports_free_disk_where_the_worker_works(tmp_path: Path) -> None:
    from batchfleet.commands.worker import free_disk

    line = free_disk(tmp_path / "not-yet" / "work")
    assert line.startswith("disk: ") and "GiB free of" in line and str(tmp_path / "not-yet" / "work") in line


def test_caches_unused_for_a_week_are_pruned_unless_in_use(tmp_path: Path) -> None:
    import os
    import time

    from worker.intake.leave import prune_caches

    old = time.time() - 8 * 86400
    entries = {}
    for cache, name in (("code", "h1"), ("code", "h2"), ("envs", "e1"), ("inputs", "i1"), ("code", "fresh")):
        entries[name] = tmp_path / cache / name
        entries[name].mkdir(parents=True)
        if name != "fresh":
            os.utime(entries[name], (old, old))
    (tmp_path / "envs" / "e1.requirements.txt").write_text("x\n")
    removed = prune_caches(tmp_path, [entries["h2"]])
    assert sorted(p.name for p in removed) == ["e1", "h1", "i1"]
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == ["fresh", "h2"]
    assert not (tmp_path / "envs" / "e1.requirements.txt").exists()
