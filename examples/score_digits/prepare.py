"""Write scikit-learn's bundled digits as PNG files and train a small classifier on them.

Usage: python prepare.py [--out DIR]

Creates DIR/images/digit_00000_label0.png ... (1,797 images, 8x8 grey) and
DIR/model/model.pkl. Running it again keeps existing images and rewrites the
same model, so it is safe to repeat.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

DEFAULT_OUT = Path(__file__).resolve().parent / "data"
# load_digits stores 0..16 intensities; PNG wants 0..255.
_SOURCE_MAX = 16.0


@dataclass(frozen=True)
class Prepared:
    """What prepare() produced."""

    images_dir: Path
    model_path: Path
    image_count: int
    written: int
    accuracy: float


def image_name(index: int, label: int) -> str:
    """File name of one digit: its index and true label, so results can be checked."""
    return f"digit_{index:05d}_label{label}.png"


def to_pixels(image: np.ndarray) -> np.ndarray:
    """Scale one 8x8 digit from 0..16 to 0..255 grey levels."""
    return np.clip(np.rint(image * (255.0 / _SOURCE_MAX)), 0, 255).astype(np.uint8)


def features(pixels: np.ndarray) -> np.ndarray:
    """Model input for a stack of 8x8 uint8 images, the same way score.py reads PNGs."""
    return pixels.reshape(len(pixels), -1).astype(np.float64) / 255.0


def write_images(pixels: np.ndarray, labels: np.ndarray, folder: Path) -> int:
    """Write missing PNGs (temp file + rename, so a crash never leaves half an image)."""
    folder.mkdir(parents=True, exist_ok=True)
    # A run killed mid-write leaves a temp file that would otherwise be scored as an input.
    for stale in folder.glob("*.tmp"):
        stale.unlink()
    written = 0
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        path = folder / image_name(index, int(label))
        if path.exists():
            continue
        partial = path.with_name(path.name + ".tmp")
        Image.fromarray(image).save(partial, format="PNG")
        os.replace(partial, path)
        written += 1
    return written


def train(pixels: np.ndarray, labels: np.ndarray) -> tuple[SVC, float]:
    """Fit on a fixed 75% split; return the model and its held-out accuracy."""
    x_train, x_test, y_train, y_test = train_test_split(
        features(pixels), labels, test_size=0.25, random_state=0, stratify=labels
    )
    model = SVC(gamma="scale", C=10.0)
    model.fit(x_train, y_train)
    return model, float(model.score(x_test, y_test))


def save_model(model: SVC, path: Path) -> None:
    """Pickle the model atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with partial.open("wb") as handle:
        pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)


def prepare(out: Path) -> Prepared:
    """Write the images and the model under `out`."""
    digits = load_digits()
    pixels = np.stack([to_pixels(image) for image in digits.images])
    labels = np.asarray(digits.target)
    images_dir = out / "images"
    written = write_images(pixels, labels, images_dir)
    model, accuracy = train(pixels, labels)
    model_path = out / "model" / "model.pkl"
    save_model(model, model_path)
    return Prepared(images_dir, model_path, len(pixels), written, accuracy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    result = prepare(args.out)
    print(f"images: {result.image_count} in {result.images_dir} ({result.written} written now)")
    print(f"model:  {result.model_path} (held-out accuracy {result.accuracy:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
