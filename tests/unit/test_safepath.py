"""Object keys and partition values cannot escape the worker's folders, on any OS."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import pytest

from common.errors import BatchfleetError
from common.safepath import UnsafePathError, safe_component, safe_join

REFUSED = [
    ("", "empty"),
    ("..", "'..'"),
    ("../x", "'..'"),
    ("a/../../x", "'..'"),
    ("a/b/..", "'..'"),
    ("a\\..\\..\\x", "'..'"),
    ("..\\x", "'..'"),
    ("a/.../x", "'..'"),
    ("a/.. /x", "'..'"),
    ("a/. ./x", "'..'"),
    ("/etc/passwd", "absolute"),
    ("\\Windows\\system.ini", "absolute"),
    ("//server/share/x", "UNC"),
    ("\\\\server\\share\\x", "UNC"),
    ("\\\\?\\C:\\x", "UNC"),
    ("\\\\.\\PhysicalDrive0", "UNC"),
    ("C:", "drive"),
    ("C:x", "drive"),
    ("C:\\Windows\\x", "drive"),
    ("c:/windows/x", "drive"),
    ("a/C:/x", "drive"),
    ("a\\D:\\x", "drive"),
    ("a\0b", "NUL"),
    ("x/\0", "NUL"),
    ("CON", "device"),
    ("a/nul.txt", "device"),
    ("aux", "device"),
    ("COM1.csv", "device"),
    ("lpt9", "device"),
    (".", "no file"),
    ("./", "no file"),
    ("//", "UNC"),
]

ACCEPTED = [
    ("a.csv", ("a.csv",)),
    ("dir/a.csv", ("dir", "a.csv")),
    ("dir\\a.csv", ("dir", "a.csv")),
    ("./dir//a.csv", ("dir", "a.csv")),
    ("dir/a.csv/", ("dir", "a.csv")),
    ("..a/b..", ("..a", "b..")),
    (".hidden", (".hidden",)),
    ("a..b/c", ("a..b", "c")),
    ("2024-01-01T10:00:00.csv", ("2024-01-01T10:00:00.csv",)),
    ("console.log", ("console.log",)),
    ("über/ファイル.txt", ("über", "ファイル.txt")),
    ("x%2F..%2Fy", ("x%2F..%2Fy",)),
]


@pytest.mark.parametrize(("rel", "why"), REFUSED, ids=[repr(r) for r, _ in REFUSED])
def test_refused(tmp_path: Path, rel: str, why: str) -> None:
    with pytest.raises(UnsafePathError) as err:
        safe_join(tmp_path, rel)
    line = err.value.line()
    assert why in line
    assert "\n" not in line and "\0" not in line
    assert isinstance(err.value, BatchfleetError)


@pytest.mark.parametrize(("rel", "parts"), ACCEPTED, ids=[r for r, _ in ACCEPTED])
def test_accepted(tmp_path: Path, rel: str, parts: tuple[str, ...]) -> None:
    got = safe_join(tmp_path, rel)
    assert got == tmp_path.resolve().joinpath(*parts)
    assert got.resolve().is_relative_to(tmp_path.resolve())


def test_result_can_be_written(tmp_path: Path) -> None:
    target = safe_join(tmp_path / "batch-7", "in/part/a.csv")
    target.parent.mkdir(parents=True)
    target.write_text("x")
    assert (tmp_path / "batch-7" / "in" / "part" / "a.csv").read_text() == "x"


def test_relative_root_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert safe_join(Path("out"), "a/b") == tmp_path.resolve() / "out" / "a" / "b"


@pytest.mark.skipif(os.name != "posix", reason="symlinks need privileges on Windows")
def test_symlink_inside_root_cannot_lead_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "link/secret.txt")


@pytest.mark.skipif(os.name != "posix", reason="symlinks need privileges on Windows")
def test_symlink_staying_inside_root_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert safe_join(tmp_path, "alias/x.txt") == tmp_path.resolve() / "alias" / "x.txt"


COMPONENTS = [
    ("2024-01", "2024-01"),
    ("New York", "New York"),
    ("a/b", "a%2Fb"),
    ("a\\b", "a%5Cb"),
    ("..", "%2E%2E"),
    (".", "%2E"),
    ("...", "%2E.%2E"),
    ("C:", "C%3A"),
    ("C:\\x", "C%3A%5Cx"),
    ("x:y", "x%3Ay"),
    ("CON", "%43ON"),
    ("nul.txt", "%6Eul.txt"),
    ("com1", "%63om1"),
    ("a.", "a%2E"),
    ("a ", "a%20"),
    (" a", " a"),
    ("100%", "100%25"),
    ("a\0b", "a%00b"),
    ("tab\there", "tab%09here"),
    ('<>:"|?*', "%3C%3E%3A%22%7C%3F%2A"),
    ("é", "%C3%A9"),
    ("", "%"),
]


@pytest.mark.parametrize(("value", "name"), COMPONENTS, ids=[repr(v) for v, _ in COMPONENTS])
def test_safe_component(tmp_path: Path, value: str, name: str) -> None:
    got = safe_component(value)
    assert got == name
    assert safe_join(tmp_path, got) == tmp_path.resolve() / got
    if value:
        assert unquote(got) == value


def test_components_stay_distinct() -> None:
    values = [v for v, _ in COMPONENTS] + ["a%2Fb", "%", "%2E%2E", "a/b/", "A/B"]
    names = [safe_component(v) for v in values]
    assert len(set(names)) == len(values)


def test_windows_trailing_strip_does_not_merge_values() -> None:
    """Windows would store 'a.' and 'a ' as 'a'; encoded they stay apart."""
    names = {safe_component(v).rstrip(" .") for v in ("a", "a.", "a ", "a..")}
    assert len(names) == 4


def test_long_component_is_shortened_uniquely() -> None:
    a, b = safe_component("x" * 500 + "1"), safe_component("x" * 500 + "2")
    assert a != b
    assert len(a.encode()) <= 200 and len(b.encode()) <= 200
    assert len(safe_component("é" * 300).encode()) <= 200
