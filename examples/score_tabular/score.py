"""Entry script: score breast cancer rows with the classifier prepare.py trained.

The input is bound as tabular, so batchfleet (like Azure ML with a TabularDataset) calls
run() with a pandas DataFrame of about mini_batch_size bytes. run() returns a DataFrame with
one row per input row: id, prediction (0 malignant, 1 benign) and probability (of the
predicted class). With append_row the rows merge, in mini-batch order, into one file whose
format append_row_format chooses (text, csv, parquet or jsonl).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import pandas as pd

model: Any = None


def init() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="model", help="model.pkl, or a folder holding it")
    # The runtime adds its own arguments (--mini_batch_size, ...): always parse_known_args.
    args, _ = parser.parse_known_args()
    model_path = Path(args.model)
    if model_path.is_dir():
        model_path = model_path / "model.pkl"
    global model
    # pickle runs code on load: only point --model at a file you made (prepare.py writes it).
    with model_path.open("rb") as handle:
        model = pickle.load(handle)


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    if model is None:
        raise RuntimeError("init() has not loaded a model")
    wanted = list(model.feature_names_in_)
    missing = [name for name in wanted if name not in mini_batch.columns]
    if missing:
        raise ValueError(f"the mini-batch lacks feature columns {missing[:5]}; is this the prepared table?")
    if mini_batch.empty:
        return pd.DataFrame({"id": pd.Series(dtype="int64"), "prediction": pd.Series(dtype="int64"),
                             "probability": pd.Series(dtype="float64")})  # fmt: skip
    probabilities = model.predict_proba(mini_batch[wanted])
    best = probabilities.argmax(axis=1)
    return pd.DataFrame(
        {
            "id": mini_batch["id"].to_numpy(),
            "prediction": model.classes_[best].astype("int64"),
            "probability": probabilities.max(axis=1),
        }
    )
