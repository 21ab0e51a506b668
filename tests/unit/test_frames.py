"""Frames: checksummed, and a torn or damaged frame anywhere in a segment hides no later frame."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.parts import frames
from common.parts.frames import PartReader, header, scan_parts, scan_segment
from common.storage import open_storage
from common.storage.options import StorageOptions
from worker.commit.parts import PartWriter


def _rows(batch: int, size: int = 40) -> bytes:
    line = f"row of batch {batch}\n".encode()
    return (line * (size // len(line) + 1))[:size]


def _frame(batch: int, data: bytes, attempt: int = 1) -> bytes:
    return header(batch, attempt, 2, 0, data) + data


def _scanned(path: Path) -> list[tuple[int, bytes]]:
    with PartReader(open_storage(str(path), StorageOptions())) as reader:
        return [(r.batch_id, reader.read(r.ref)) for r in scan_segment(str(path))]


@pytest.fixture(params=[frames.WINDOW, 64, 7], ids=["window-1MiB", "window-64", "window-7"])
def window(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Small windows make frames straddle window edges, as a big segment's do."""
    monkeypatch.setattr(frames, "WINDOW", request.param)
    return int(request.param)


def test_writer_frames_scan_back(tmp_path: Path, window: int) -> None:
    writer = PartWriter(open_storage(str(tmp_path), StorageOptions()), str(tmp_path / "parts" / "n1"), "p")
    refs = {b: writer.commit(b, 1, 2, 0, _rows(b, 10 + 37 * b)) for b in range(8)}
    writer.close()
    (segment,) = (tmp_path / "parts" / "n1").glob("*.seg")
    found = list(scan_segment(str(segment)))
    assert [r.batch_id for r in found] == list(range(8))
    assert {r.batch_id: r.ref for r in found} == refs
    assert _scanned(segment) == [(b, _rows(b, 10 + 37 * b)) for b in range(8)]


def test_torn_frame_mid_segment_is_skipped(tmp_path: Path, window: int) -> None:
    """A write cut short (disk full, then freed) leaves a torn frame with whole frames after it."""
    torn = _frame(1, _rows(1, 300))
    segment = tmp_path / "a.seg"
    segment.write_bytes(_frame(0, _rows(0)) + torn[: len(torn) // 2] + _frame(2, _rows(2)) + _frame(3, _rows(3)))
    assert _scanned(segment) == [(0, _rows(0)), (2, _rows(2)), (3, _rows(3))]


def test_header_cut_short_mid_segment(tmp_path: Path, window: int) -> None:
    segment = tmp_path / "a.seg"
    segment.write_bytes(_frame(0, _rows(0)) + b"#bf 1 1 2" + _frame(2, _rows(2)))
    assert [b for b, _ in _scanned(segment)] == [0, 2]


def test_damaged_rows_fail_the_checksum(tmp_path: Path, window: int) -> None:
    damaged = bytearray(_frame(1, _rows(1, 200)))
    damaged[-5] ^= 0x20
    segment = tmp_path / "a.seg"
    segment.write_bytes(_frame(0, _rows(0)) + bytes(damaged) + _frame(2, _rows(2)))
    assert [b for b, _ in _scanned(segment)] == [0, 2]


def test_a_length_that_overshoots_is_not_trusted(tmp_path: Path, window: int) -> None:
    """A header whose length runs past later frames (or the file) must not swallow them."""
    lying = b"#bf 1 1 2 0 5000 00000000\n" + _rows(1)
    segment = tmp_path / "a.seg"
    segment.write_bytes(lying + _frame(2, _rows(2)) + _frame(3, _rows(3)))
    assert [b for b, _ in _scanned(segment)] == [2, 3]


def test_rows_that_look_like_a_header_are_not_a_frame(tmp_path: Path, window: int) -> None:
    """Resynchronising after a torn frame finds the next frame that checks out, not a look-alike."""
    fake = b"#bf 9 1 1 0 3 00000000\nabc"
    inner = _frame(1, b"x" * 20 + fake + b"y" * 20)
    segment = tmp_path / "a.seg"
    segment.write_bytes(inner[:30] + _frame(2, _rows(2)))
    assert [b for b, _ in _scanned(segment)] == [2]
    segment.write_bytes(inner + _frame(2, _rows(2)))
    assert [b for b, _ in _scanned(segment)] == [1, 2], "a look-alike inside rows is read as rows"


def test_frame_larger_than_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "WINDOW", 64)
    monkeypatch.setattr(frames, "_CRC_STEP", 50)
    big = _rows(1, 1000)
    segment = tmp_path / "a.seg"
    segment.write_bytes(_frame(0, _rows(0)) + _frame(1, big) + _frame(2, _rows(2)))
    assert _scanned(segment) == [(0, _rows(0)), (1, big), (2, _rows(2))]
    damaged = bytearray(segment.read_bytes())
    damaged[len(_frame(0, _rows(0))) + 500] ^= 1
    segment.write_bytes(bytes(damaged))
    assert [b for b, _ in _scanned(segment)] == [0, 2]


def test_torn_tail_and_empty_segments(tmp_path: Path) -> None:
    segment = tmp_path / "a.seg"
    whole = _frame(0, _rows(0))
    segment.write_bytes(whole + _frame(1, _rows(1))[:-3])
    assert [b for b, _ in _scanned(segment)] == [0]
    segment.write_bytes(b"")
    assert _scanned(segment) == []
    assert list(scan_segment(str(tmp_path / "missing.seg"))) == []


def test_frames_without_a_checksum_still_read(tmp_path: Path) -> None:
    """Segments written before frames carried checksums."""
    segment = tmp_path / "a.seg"
    segment.write_bytes(b"#bf 0 1 1 0 4\nabc\n#bf 1 2 1 0 4\ndef\n")
    assert _scanned(segment) == [(0, b"abc\n"), (1, b"def\n")]


def test_scan_parts_walks_nodes(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path), StorageOptions())
    for node, batches in (("n1", [0, 2]), ("n2", [1])):
        writer = PartWriter(store, str(tmp_path / "parts" / node), "p")
        for b in batches:
            writer.commit(b, 1, 2, 0, _rows(b))
        writer.close()
    assert sorted(r.batch_id for r in scan_parts(store, str(tmp_path / "parts"))) == [0, 1, 2]


def test_header_checksum_covers_the_numbers() -> None:
    data = b"abc\n"
    assert header(1, 1, 1, 0, data) != header(2, 1, 1, 0, data)
    assert header(1, 1, 1, 0, data).split()[-1] != header(1, 1, 0, 1, data).split()[-1]
