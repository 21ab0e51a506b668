"""The score_digits example: prepare.py's data and model, and the entry script in-process."""

from __future__ import annotations

import importlib.util
import pickle
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "score_digits"
LINE = re.compile(r"^digit_\d{5}_label(\d)\.png (\d)$")


def load(name: str) -> ModuleType:
    """Import an example file under a private name, fresh each time (score.py keeps globals)."""
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    assert load("prepare").main(["--out", str(out)]) == 0
    return out


@pytest.fixture
def score(data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    module = load("score")
    model = data / "model" / "model.pkl"
    # An unknown flag too: the runtime adds its own, and init() must ignore them.
    argv = ["score.py", "--model", str(model), "--output", str(tmp_path), "--mini_batch_size", "10"]
    monkeypatch.setattr(sys, "argv", argv)
    module.init()
    return module


def read_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def images(data: Path) -> list[Path]:
    return sorted((data / "images").glob("*.png"))


def test_prepare_writes_every_digit_as_png(data: Path) -> None:
    files = images(data)
    assert len(files) == 1797
    assert files[0].name == "digit_00000_label0.png"
    assert [p.name for p in (data / "images").iterdir() if p.suffix != ".png"] == []
    with Image.open(files[0]) as image:
        assert image.size == (8, 8)
        assert image.mode == "L"
    pixels = np.stack([read_pixels(p) for p in files[:50]])
    assert pixels.min() == 0
    assert pixels.max() == 255


def test_prepare_model_loads_and_predicts(data: Path) -> None:
    with (data / "model" / "model.pkl").open("rb") as handle:
        model = pickle.load(handle)
    predicted = model.predict(np.zeros((2, 64)))
    assert predicted.shape == (2,)
    assert set(predicted) <= set(range(10))


def test_prepare_is_idempotent(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in images(data)}
    assert load("prepare").main(["--out", str(data)]) == 0
    assert "(0 written now)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in images(data)} == before


def test_run_returns_one_line_per_image(score: ModuleType, data: Path) -> None:
    batch = [str(p) for p in images(data)[:3]]
    lines = score.run(batch)
    assert len(lines) == 3
    for path, line in zip(batch, lines, strict=True):
        assert LINE.match(line), line
        assert line.startswith(Path(path).name + " ")


def test_run_predictions_match_labels(score: ModuleType, data: Path) -> None:
    lines = score.run([str(p) for p in images(data)[:200]])
    matches = [LINE.match(line) for line in lines]
    correct = sum(1 for m in matches if m and m.group(1) == m.group(2))
    assert correct >= 190


def test_init_accepts_a_model_folder(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load("score")
    monkeypatch.setattr(sys, "argv", ["score.py", "--model", str(data / "model")])
    module.init()
    assert len(module.run([str(images(data)[0])])) == 1


def test_run_names_a_file_of_the_wrong_shape(score: ModuleType, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(big)
    with pytest.raises(ValueError, match=r"big\.png: expected an 8x8 image"):
        score.run([str(big)])
