"""Tabular inputs on a real S3 endpoint: ranged reads only, every row once, bad files fail their batch.

Needs the session fixture ``s3`` from tests/conftest.py (``.endpoint_url``, ``.make_bucket(name)``,
``.options``).
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import BadDataError
from common.messages import InputBinding
from common.settings import RunSettings
from common.storage import Storage, open_storage
from coordinator.plan.partitions import BatchPlan
from coordinator.plan.tables import plan_tabular
from tests.storage_helpers import CountingStorage as Counting
from worker.run.tables import read_batch

pytestmark = pytest.mark.integration

ROWS = 20000


def table(rows: int, start: int = 0) -> pd.DataFrame:
    ids = np.arange(start, start + rows)
    return pd.DataFrame(
        {
            "id": ids,
            "score": ids * 0.25,
            "country": np.where(ids % 3 == 0, "us", "fr"),
            "note": [f"row, number {i}" for i in ids],
        }
    )


def encode(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True).encode()
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, row_group_size=1000)
    return sink.getvalue()


@pytest.fixture
def prefix(s3: Any) -> str:
    bucket = f"tabular-{uuid.uuid4().hex[:12]}"
    s3.make_bucket(bucket)
    return f"s3://{bucket}/in"


def store(s3: Any, prefix: str) -> Counting:
    return Counting(open_storage(prefix, s3.options))


def plan(storage: Storage, uri: str, **settings: object) -> list[BatchPlan]:
    binding = InputBinding(name="rows", uri=uri, kind="tabular", mode="direct")
    return list(plan_tabular(storage, binding, RunSettings.model_validate(settings)))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_split_read_by_ranges(s3: Any, prefix: str, fmt: str) -> None:
    storage = store(s3, prefix)
    body = encode(table(ROWS), fmt)
    storage.write_bytes(f"{prefix}/big.{fmt}", body)
    plans = plan(storage, prefix, mini_batch_size="32KB")
    assert len(plans) > 8, "one object is cut into many batches"
    assert storage.whole_reads == 0
    assert storage.bytes_read() < len(body) / 2, "planning reads headers, footers and cut windows only"

    rows: list[int] = []
    for index, batch in enumerate(plans):
        storage.ranges.clear()
        frame = read_batch(storage, batch.items, None)
        rows.extend(frame["id"])
        assert storage.whole_reads == 0
        assert storage.bytes_read() < len(body) / 4, f"batch {index} read {storage.bytes_read()} bytes"
        if fmt == "parquet":
            assert len(storage.ranges) <= 2, "footer tail plus one span of row groups"
        elif batch.items[0].offset:
            assert len(storage.ranges) <= 2, "its range plus the CSV header"
    assert sorted(rows) == list(range(ROWS))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_column_partitions_on_s3(s3: Any, prefix: str, fmt: str) -> None:
    storage = store(s3, prefix)
    for index in range(2):
        storage.write_bytes(f"{prefix}/{index}.{fmt}", encode(table(3000, index * 3000), fmt))
    plans = plan(storage, prefix, partition_keys=["country"], mini_batch_size="16KB")
    assert [p.partition for p in plans] == [{"country": "fr"}, {"country": "us"}]
    seen: list[int] = []
    for batch in plans:
        frame = read_batch(storage, batch.items, batch.partition)
        assert batch.partition is not None
        assert set(frame["country"]) == {batch.partition["country"]}
        seen.extend(frame["id"])
    assert sorted(seen) == list(range(6000))


def test_bad_parquet_on_s3_fails_its_batch(s3: Any, prefix: str) -> None:
    storage = store(s3, prefix)
    good = encode(table(500), "parquet")
    storage.write_bytes(f"{prefix}/a-good.parquet", good)
    storage.write_bytes(f"{prefix}/b-truncated.parquet", good[: len(good) // 2])
    plans = plan(storage, prefix)
    assert len(read_batch(storage, plans[0].items, None)) == 500
    with pytest.raises(BadDataError) as caught:
        read_batch(storage, plans[-1].items, None)
    assert "b-truncated.parquet" in caught.value.line()
