"""Write scikit-learn's bundled breast cancer table as Parquet and CSV, and train a classifier.

Usage: python prepare.py [--out DIR] [--row-group-rows N]

Creates DIR/parquet/breast_cancer.parquet (several row groups, so a tabular input is cut into
several mini-batches), DIR/csv/breast_cancer.csv (the same rows), and DIR/model/model.pkl
(a scaler + logistic regression fitted on a fixed 75% split). Every row keeps its `id` and true
`target` (0 malignant, 1 benign), so results can be checked against the output alone.
Running it again rewrites the same files.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_OUT = Path(__file__).resolve().parent / "data"
TABLE_NAME = "breast_cancer"


@dataclass(frozen=True)
class Prepared:
    """What prepare() produced."""

    parquet_path: Path
    csv_path: Path
    model_path: Path
    rows: int
    row_groups: int
    accuracy: float


def column_name(name: str) -> str:
    """'mean radius' -> 'mean_radius': names without spaces are easier to use in every format."""
    return re.sub(r"\W+", "_", name.strip()).lower()


def load_table() -> pd.DataFrame:
    """The 569 rows as id, the 30 features, and target (0 malignant, 1 benign)."""
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [column_name(str(name)) for name in frame.columns]
    frame.insert(0, "id", range(len(frame)))
    return frame.astype({"id": "int64", "target": "int64"})


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [name for name in frame.columns if name not in ("id", "target")]


def train(frame: pd.DataFrame) -> tuple[Pipeline, float]:
    """Fit on a fixed 75% split; return the model and its held-out accuracy."""
    features = frame[feature_columns(frame)]
    x_train, x_test, y_train, y_test = train_test_split(
        features, frame["target"], test_size=0.25, random_state=0, stratify=frame["target"]
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    return model, float(model.score(x_test, y_test))


def _replace(partial: Path, path: Path) -> None:
    # Temp file + rename: a crash never leaves half a file where a job would read it.
    os.replace(partial, path)


def write_parquet(frame: pd.DataFrame, path: Path, row_group_rows: int) -> int:
    """Write the table with row groups of `row_group_rows`; return the row group count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), partial, row_group_size=row_group_rows)
    _replace(partial, path)
    return int(pq.ParquetFile(path).num_row_groups)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    frame.to_csv(partial, index=False, lineterminator="\n")
    _replace(partial, path)


def save_model(model: Pipeline, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with partial.open("wb") as handle:
        pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    _replace(partial, path)


def prepare(out: Path, row_group_rows: int = 64) -> Prepared:
    """Write the Parquet and CSV tables and the model under `out`."""
    frame = load_table()
    parquet_path = out / "parquet" / f"{TABLE_NAME}.parquet"
    csv_path = out / "csv" / f"{TABLE_NAME}.csv"
    groups = write_parquet(frame, parquet_path, row_group_rows)
    write_csv(frame, csv_path)
    model, accuracy = train(frame)
    model_path = out / "model" / "model.pkl"
    save_model(model, model_path)
    return Prepared(parquet_path, csv_path, model_path, len(frame), groups, accuracy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--row-group-rows", type=int, default=64, help="rows per Parquet row group (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.row_group_rows < 1:
        parser.error("--row-group-rows must be at least 1")
    result = prepare(args.out, args.row_group_rows)
    print(f"parquet: {result.parquet_path} ({result.rows} rows, {result.row_groups} row groups)")
    print(f"csv:     {result.csv_path} ({result.rows} rows)")
    print(f"model:   {result.model_path} (held-out accuracy {result.accuracy:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
