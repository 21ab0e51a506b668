"""Entry script: score 8x8 digit images with the classifier prepare.py trained.

batchfleet (or Azure ML) calls init() once per worker process, then run() once per
mini-batch with a list of image paths; each returned string becomes one line of
the merged output (append_row): "<file name> <predicted digit>".
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

args: argparse.Namespace | None = None
model: Any = None


def init() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="model", help="model.pkl, or a folder holding it")
    # Accepted for the seed's calling convention; results go through append_row, not files here.
    parser.add_argument("--output", default="output")

    global args
    # The runtime adds its own arguments (--mini_batch_size, ...): always parse_known_args.
    args, _ = parser.parse_known_args()

    model_path = Path(args.model)
    if model_path.is_dir():
        model_path = model_path / "model.pkl"
    global model
    # pickle runs code on load: only point --model at a file you made (prepare.py writes it).
    with model_path.open("rb") as handle:
        model = pickle.load(handle)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """One PNG as the model's 64 features in 0..1."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    if pixels.shape != (8, 8):
        raise ValueError(f"{path}: expected an 8x8 image, got {pixels.shape[1]}x{pixels.shape[0]}")
    return pixels.reshape(-1) / 255.0


def run(mini_batch: list[str]) -> list[str]:
    if model is None:
        raise RuntimeError("init() has not loaded a model")
    if not mini_batch:
        return []
    features = np.stack([read_image(path) for path in mini_batch])
    digits = model.predict(features)
    return [f"{Path(path).name} {int(digit)}" for path, digit in zip(mini_batch, digits, strict=True)]
