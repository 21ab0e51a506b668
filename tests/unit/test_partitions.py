"""File partitions: layouts by position, hive style, streaming, bad keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import InputError, UsageError
from common.storage.base import ObjectInfo
from common.storage.local import LocalStorage
from coordinator.plan.partitions import BatchPlan, group_by_values, parse_layout, partition_files

# The seed's example, verbatim: 10 files, 2 countries, 7 distinct country/state pairs.
SEED = [
    "country1/state1/file1.txt",
    "country1/state1/file2.txt",
    "country1/state2/file1.txt",
    "country1/state2/file2.txt",
    "country1/state3/file1.txt",
    "country1/state4/file1.txt",
    "country2/state1/file1.txt",
    "country2/state2/file1.txt",
    "country2/state3/file1.txt",
    "country2/state3/file2.txt",
]
LAYOUT = "{country}/{state}/*"


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    for rel in SEED:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return tmp_path


def infos(rels: list[str]) -> list[ObjectInfo]:
    return [ObjectInfo(uri=f"s3://bucket/in/{rel}", rel=rel, size=len(rel)) for rel in rels]


def names(plans: list[BatchPlan]) -> list[list[str]]:
    return [[item.name for item in p.items] for p in plans]


@pytest.mark.parametrize(
    ("layout", "keys"),
    [
        ("{country}/{state}/*", ["country", "state"]),
        ("/{country}/{state}/", ["country", "state"]),
        ("{country}", ["country"]),
        ("data/{year}/*.csv", ["year"]),
        ("year={year}/month={month}/*", ["year", "month"]),
        ("{a}_{b}/*", ["a", "b"]),
    ],
)
def test_parse_layout(layout: str, keys: list[str]) -> None:
    assert parse_layout(layout) == keys


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("", "empty"),
        ("data/*", "names no keys"),
        ("{country}//{state}", "empty folder level"),
        ("{1country}/*", "not a name"),
        ("{}/*", "not a name"),
        ("{country}/{country}/*", "twice"),
        ("{country/*", "unbalanced"),
        ("country}/*", "unbalanced"),
    ],
)
def test_parse_layout_refuses(layout: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_layout(layout)


def test_seed_by_country(seed: Path) -> None:
    plans = list(partition_files(LocalStorage().list(str(seed)), ["country"], LAYOUT))
    assert [p.partition for p in plans] == [{"country": "country1"}, {"country": "country2"}]
    assert [len(p.items) for p in plans] == [6, 4]
    assert all(item.uri == str(seed / item.name) and item.size for p in plans for item in p.items)


def test_seed_by_country_and_state(seed: Path) -> None:
    plans = list(partition_files(LocalStorage().list(str(seed)), ["country", "state"], LAYOUT))
    assert len(plans) == 7
    assert plans[0].partition == {"country": "country1", "state": "state1"}
    assert names(plans)[0] == ["country1/state1/file1.txt", "country1/state1/file2.txt"]
    assert sorted(item.name for p in plans for item in p.items) == sorted(SEED)


def test_seed_by_state_groups_across_countries(seed: Path) -> None:
    plans = list(partition_files(LocalStorage().list(str(seed)), ["state"], LAYOUT))
    assert [p.partition for p in plans] == [{"state": f"state{i}"} for i in (1, 2, 3, 4)]
    assert [len(p.items) for p in plans] == [3, 3, 3, 1]


@pytest.mark.parametrize("keys", [["country"], ["country", "state"], ["state", "country"]])
def test_hive_style(keys: list[str]) -> None:
    rels = [rel.replace("country", "country=c").replace("state", "state=s") for rel in SEED]
    plans = list(partition_files(infos(rels), keys, None))
    expected = 2 if keys == ["country"] else 7
    assert len(plans) == expected
    first = plans[0].partition
    assert first is not None and first["country"] == "c1" and list(first) == keys


def test_hive_values_are_unquoted() -> None:
    plans = list(partition_files(infos(["city=New%20York/a.csv", "city=Paris/b.csv"]), ["city"], None))
    assert [p.partition for p in plans] == [{"city": "New York"}, {"city": "Paris"}]


@pytest.mark.parametrize(
    ("rels", "keys", "layout", "error", "words"),
    [
        (SEED, ["region"], LAYOUT, UsageError, ["'region'", "country, state"]),
        (SEED, ["country"], None, UsageError, ["'country'", "hive-style", "keys found there: none"]),
        (["country=a/x.txt"], ["state"], None, UsageError, ["'state'", "country"]),
        ([*SEED, "readme.txt"], ["country"], LAYOUT, UsageError, ["readme.txt", "does not fit"]),
        (SEED, ["country"], "{country", UsageError, ["unbalanced"]),
    ],
    ids=["key not in layout", "no hive folders", "hive key missing", "file outside layout", "bad layout"],
)
def test_bad_keys(
    rels: list[str], keys: list[str], layout: str | None, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as caught:
        list(partition_files(infos(rels), keys, layout))
    assert isinstance(caught.value, UsageError)
    for word in words:
        assert word in caught.value.line()


def counting(rels: list[str], seen: list[str]) -> Iterator[ObjectInfo]:
    for info in infos(rels):
        seen.append(info.rel)
        yield info


def test_prefix_keys_stream() -> None:
    seen: list[str] = []
    stream = partition_files(counting(SEED, seen), ["country"], LAYOUT)
    first = next(stream)
    assert len(first.items) == 6
    assert len(seen) == 7, "the first group comes out as soon as the next one starts"


def test_other_keys_accumulate() -> None:
    seen: list[str] = []
    stream = partition_files(counting(SEED, seen), ["state"], LAYOUT)
    next(stream)
    assert len(seen) == len(SEED)


def test_unsorted_listing_is_caught_when_streaming() -> None:
    rels = ["a/x/1.txt", "b/x/1.txt", "a/y/1.txt"]
    with pytest.raises(InputError, match="not grouped"):
        list(partition_files(infos(rels), ["country"], "{country}/{state}/*"))


def test_layout_with_literal_and_glob() -> None:
    rels = ["data/2020/a.csv", "data/2020/b.csv", "data/2021/c.csv"]
    plans = list(partition_files(infos(rels), ["year"], "data/{year}/*.csv"))
    assert [p.partition for p in plans] == [{"year": "2020"}, {"year": "2021"}]
    with pytest.raises(UsageError, match="does not fit"):
        list(partition_files(infos(["data/2020/a.txt"]), ["year"], "data/{year}/*.csv"))


def test_deeper_files_belong_to_their_folder() -> None:
    plans = list(partition_files(infos(["c1/s1/sub/x.txt", "c1/s2/y.txt"]), ["country"], "{country}/{state}"))
    assert names(plans) == [["c1/s1/sub/x.txt", "c1/s2/y.txt"]]


def test_empty_listing_yields_nothing() -> None:
    assert list(partition_files(iter([]), ["country"], LAYOUT)) == []


def test_group_by_values_sorted_and_deduplicated() -> None:
    from common.messages import Item

    a, b = Item(uri="a", name="a"), Item(uri="b", name="b")
    plans = list(group_by_values([(a, [("y",), ("x",), ("y",)]), (b, [("x",)])], ["k"]))
    assert [(p.partition, [i.uri for i in p.items]) for p in plans] == [
        ({"k": "x"}, ["a", "b"]),
        ({"k": "y"}, ["a"]),
    ]
