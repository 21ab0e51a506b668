"""Azure ML data references: datastores, data assets, MLTable folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import BatchfleetError, UsageError
from common.storage import StorageOptions
from coordinator.spec.datastores import DataMap, parse_datastores
from coordinator.spec.mltable import mltable_data


def test_datastore_flags_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = parse_datastores(["blobs=s3://bucket/root", "local=data"])
    assert found == {"blobs": "s3://bucket/root", "local": str(tmp_path / "data")}


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (["blobs"], "--datastore expects NAME=URI, got 'blobs'"),
        (["=s3://x"], "--datastore expects NAME=URI"),
        (["a=/x", "a=/y"], "--datastore a is given twice"),
    ],
)
def test_bad_datastore_flags(values: list[str], words: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_datastores(values)
    assert words in caught.value.line()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("azureml://datastores/blobs/paths/images/2024/", "s3://bucket/root/images/2024"),
        ("azureml://datastores/blobs/paths/file.csv", "s3://bucket/root/file.csv"),
        (
            "azureml://subscriptions/s/resourcegroups/g/workspaces/w/datastores/blobs/paths/x/y.txt",
            "s3://bucket/root/x/y.txt",
        ),
        ("/plain/path", "/plain/path"),
        ("s3://other/key", "s3://other/key"),
    ],
)
def test_datastore_paths_map(uri: str, expected: str) -> None:
    assert DataMap({"blobs": "s3://bucket/root"}).locate(uri, "input 'x'") == expected


def write_asset(folder: Path, name: str, version: str, path: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-{version}.yml").write_text(f"name: {name}\nversion: {version}\ntype: uri_folder\npath: {path}\n")


def test_data_assets_by_version_and_latest(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    write_asset(assets, "images", "1", "../v1")
    write_asset(assets, "images", "10", "azureml://datastores/blobs/paths/v10")
    write_asset(assets, "images", "2", "s3://bucket/v2")
    data = DataMap({"blobs": "s3://bucket/root"}, assets)
    assert data.locate("azureml:images:1", "input 'x'") == str(tmp_path / "v1")
    assert data.locate("azureml:images:2", "input 'x'") == "s3://bucket/v2"
    assert data.locate("azureml:images@latest", "input 'x'") == "s3://bucket/root/v10"
    assert data.locate("azureml:images", "input 'x'") == "s3://bucket/root/v10"


@pytest.mark.parametrize(
    ("uri", "assets", "words"),
    [
        (
            "azureml://datastores/other/paths/x",
            True,
            ["on datastore 'other', which is not mapped", "--datastore other="],
        ),
        ("azureml:images:1", False, ["data asset 'images', and no data asset folder is given", "--data-assets"]),
        ("azureml:missing:1", True, ["no data asset 'missing' in"]),
        ("azureml:images:7", True, ["data asset 'images' has no version 7 (has 1)"]),
        ("azureml:/odd", True, ["an Azure ML reference batchfleet cannot read"]),
    ],
)
def test_bad_references_are_one_clear_line(tmp_path: Path, uri: str, assets: bool, words: list[str]) -> None:
    write_asset(tmp_path / "assets", "images", "1", "../v1")
    data = DataMap({"blobs": "/b"}, tmp_path / "assets" if assets else None)
    with pytest.raises(BatchfleetError) as caught:
        data.locate(uri, "input 'x'")
    for word in words:
        assert word in caught.value.line()


def mltable(folder: Path, body: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLTable").write_text(body)
    return str(folder)


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ("- file: ./iris.csv", "iris.csv"),
        ("- folder: ./parts/", "parts"),
        ("- pattern: ./*.parquet", ""),
        ("- pattern: ./parts/**/*.csv", "parts"),
        ("- file: s3://bucket/rows.csv", "s3://bucket/rows.csv"),
    ],
)
def test_mltable_paths(tmp_path: Path, paths: str, expected: str) -> None:
    folder = mltable(
        tmp_path / "t", f"paths:\n  {paths}\ntransformations:\n  - read_delimited:\n      delimiter: ','\n"
    )
    found = mltable_data(folder, StorageOptions(), "input 'x'")
    assert found == (expected if "://" in expected else str(Path(folder, expected) if expected else Path(folder)))


def test_a_folder_without_mltable_file_is_not_an_mltable(tmp_path: Path) -> None:
    assert mltable_data(str(tmp_path), StorageOptions(), "input 'x'") is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("paths:\n  - file: a.csv\n  - file: b.csv\n", "must name exactly one entry under paths:"),
        ("paths:\n  - file: a.csv\ntransformations:\n  - take: 10\n", "transformation 'take' is not supported"),
        ("paths:\n  - file: a.csv\ntransformations:\n  - read_delimited:\n      delimiter: ';'\n", "delimiter ';'"),
        ("paths:\n  - pattern: ./a?.csv\n", "is not a file, a folder or a pattern like ./*.csv"),
        ("- just a list\n", "is not an MLTable mapping"),
    ],
)
def test_bad_mltable_files(tmp_path: Path, body: str, words: str) -> None:
    folder = mltable(tmp_path / "t", body)
    with pytest.raises(UsageError) as caught:
        mltable_data(folder, StorageOptions(), "input 'x'")
    assert words in caught.value.line()


def test_datastores_from_the_config_file_and_flags(tmp_path: Path) -> None:
    """A `datastores` table in batchfleet.toml maps them; a --datastore flag adds to it and wins."""
    import shutil

    from tests.cli_helpers import batchfleet

    aml = tmp_path / "aml"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "aml", aml, ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "batchfleet.toml"
    config.write_text(
        f'[datastores]\nworkspaceblobstore = "{aml / "data"}"\nresults = "{tmp_path / "wrong"}"\n'
        f'[profile.default]\ndata_assets = "{aml / "assets"}"\n'
    )
    result = batchfleet(
        "run", aml / "parallel_job_datastore.yml", "--config", config, "--store", tmp_path / "store",
        "--datastore", f"results={tmp_path / 'results'}", "--no-progress",
        env={"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")},
    )  # fmt: skip
    assert result.code == 0, result.stderr
    rows = (tmp_path / "results" / "scores" / "numbers.txt").read_text().splitlines()
    assert rows == [f"n{i:02d}.txt {i}" for i in range(12)]
    assert not (tmp_path / "wrong").exists()
    shown = batchfleet("config", "show", "--config", config, env={"HOME": str(tmp_path / "home")})
    assert shown.code == 0 and "data_assets" in shown.stdout, shown.stderr
