"""Planning: wire-form plan lines, streamed publishing, signed plans, listings without sizes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.messages import BatchMessage
from common.signing import SignatureError, verify_batch
from common.storage import StorageOptions
from common.storage.local import LocalStorage
from coordinator.plan.files import plan_batches, plan_lines
from coordinator.plan.submit import FIRST_CHUNK, PUBLISH_CHUNK, read_plan, write_plan
from tests.runtime_helpers import make_files, make_job

KEY = b"k" * 32


def test_plan_lines_are_valid_messages_in_listing_order(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 25)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=10)
    lines = list(plan_lines(job, StorageOptions()))
    assert [line["batch_id"] for line in lines] == [0, 1, 2]
    assert [len(line["items"]) for line in lines] == [10, 10, 5]
    messages = [BatchMessage.model_validate(line) for line in lines]
    names = [item.name for message in messages for item in message.items]
    assert names == [f"f{i:05d}.txt" for i in range(25)]
    # Batches by count need no sizes: no stat per file, and no None fields on the wire.
    assert all(set(item) == {"uri", "name"} for line in lines for item in line["items"])
    assert "partition" not in lines[0]


def test_plan_batches_matches_plan_lines(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 7)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=3)
    lines = list(plan_lines(job, StorageOptions()))
    assert [m.model_dump(exclude_none=True) for m in plan_batches(job, StorageOptions())] == lines


def test_partitioned_files_keep_their_sizes_and_partition(tmp_path: Path) -> None:
    for country in ("de", "fr"):
        make_files(tmp_path / "data" / country, 2)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", partition_keys=["country"],
                   partition_layout="{country}/*")  # fmt: skip
    lines = list(plan_lines(job, StorageOptions()))
    assert [line["partition"] for line in lines] == [{"country": "de"}, {"country": "fr"}]
    assert all(item["size"] == len("item 0\n") for line in lines for item in line["items"])


def test_write_plan_streams_growing_chunks_to_the_sink(tmp_path: Path) -> None:
    batches_total = FIRST_CHUNK * 7 + 3
    make_files(tmp_path / "data", batches_total)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=1)
    chunks: list[list[bytes]] = []
    manifest, batches, items = write_plan(job, StorageOptions(), sink=chunks.append)
    assert (batches, items) == (batches_total, batches_total)
    sizes = [len(chunk) for chunk in chunks]
    assert sizes[:3] == [FIRST_CHUNK, FIRST_CHUNK * 2, FIRST_CHUNK * 4]
    assert sum(sizes) == batches_total and max(sizes) <= PUBLISH_CHUNK
    published = [json.loads(line)["batch_id"] for chunk in chunks for line in chunk]
    assert published == list(range(batches_total))
    # The local manifest and the stored plan hold the same lines that were published.
    stored = (Path(job.store_uri) / "plan.jsonl").read_bytes().splitlines()
    assert stored == [line for chunk in chunks for line in chunk]
    assert [m.batch_id for m in read_plan(manifest)] == published
    shutil.rmtree(manifest.parent)


@pytest.mark.parametrize("links", [True, False])
def test_a_local_job_area_gets_the_manifest_linked_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool
) -> None:
    make_files(tmp_path / "data", 5)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=2)
    if not links:  # another disk, or a file system without hard links: the plan is copied
        monkeypatch.setattr("coordinator.plan.submit.os.link", lambda *a: (_ for _ in ()).throw(OSError("no links")))
    manifest, batches, _ = write_plan(job, StorageOptions())
    plan = Path(job.store_uri) / "plan.jsonl"
    assert manifest.parent.parent == Path(job.store_uri)  # scratch made in the area, on its disk
    assert plan.read_bytes() == manifest.read_bytes() and batches == 3
    assert plan.samefile(manifest) is links
    shutil.rmtree(manifest.parent)
    assert len(plan.read_bytes().splitlines()) == 3
    assert sorted(p.name for p in Path(job.store_uri).iterdir()) == ["plan.jsonl"]


def test_signed_plan_lines_verify_after_the_wire(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 4)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=2)
    manifest, _, _ = write_plan(job, StorageOptions(), KEY)
    messages = list(read_plan(manifest))
    for message in messages:
        verify_batch(KEY, job.job_id, message)
    shutil.rmtree(manifest.parent)
    forged = messages[0].model_copy(update={"items": messages[1].items})
    with pytest.raises(SignatureError):
        verify_batch(KEY, job.job_id, forged)


def test_local_listing_without_sizes(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 3)
    store = LocalStorage()
    with_sizes = list(store.list(str(tmp_path / "data")))
    without = list(store.list(str(tmp_path / "data"), sizes=False))
    assert [i.rel for i in without] == [i.rel for i in with_sizes]
    assert all(i.size is None for i in without) and all(i.size == 7 for i in with_sizes)


def _decoded(job, key: bytes | None = None) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    from coordinator.plan.lines import encoded_plan

    return [json.loads(line) for line, _ in encoded_plan(job, StorageOptions(), key)]


HOSTILE_NAMES = ['a "quoted" name.txt', "back\\slash.txt", "ünïcödé-名前.txt", "tab\tand,comma.txt", "z.txt"]


@pytest.mark.parametrize("names_at_a_time", [4096, 3])
def test_bulk_lines_are_the_plan_lines_across_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names_at_a_time: int
) -> None:
    """Names with quotes, backslashes and non-ASCII; folders between files; batches across folders."""
    from coordinator.plan import lines

    monkeypatch.setattr(lines, "SLICE", names_at_a_time)
    data = tmp_path / "data"
    for folder in ("a", "a/deeper", "b", ""):
        (data / folder).mkdir(parents=True, exist_ok=True)
        for name in HOSTILE_NAMES:
            (data / folder / name).write_text(name)
    (data / "a.txt").write_text("sorts before the folder a/")
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=4)
    assert _decoded(job) == list(plan_lines(job, StorageOptions()))
    assert len(_decoded(job)) == -(-(4 * len(HOSTILE_NAMES) + 1) // 4)


def test_bulk_lines_are_canonical_and_signed_as_they_are(tmp_path: Path) -> None:
    from common.signing import canonical_body
    from coordinator.plan.lines import encoded_plan

    (tmp_path / "data").mkdir()
    for name in HOSTILE_NAMES:
        (tmp_path / "data" / name).write_text(name)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data", mini_batch_size=2)
    for line, count in encoded_plan(job, StorageOptions()):
        assert line == canonical_body(json.loads(line)) and count == len(json.loads(line)["items"])
    for line, _ in encoded_plan(job, StorageOptions(), KEY):
        verify_batch(KEY, job.job_id, BatchMessage.model_validate_json(line))


def test_bulk_lines_of_a_single_file_input(tmp_path: Path) -> None:
    make_files(tmp_path / "data", 2)
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data" / "f00001.txt")
    [line] = _decoded(job)
    assert line["items"] == [{"name": "f00001.txt", "uri": str(tmp_path / "data" / "f00001.txt")}]


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_bulk_lines_name_an_input_that_has_no_files(tmp_path: Path, setup: str) -> None:
    from common.errors import InputError

    if setup == "empty":
        (tmp_path / "data").mkdir()
    job = make_job(tmp_path, tmp_path / "code", tmp_path / "data")
    with pytest.raises(InputError, match=r"input data: .*(does not exist|holds no files)"):
        _decoded(job)
