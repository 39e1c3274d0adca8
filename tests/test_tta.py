"""Test-time augmentation: a `--tta flip` / `flip2` prediction is the mean of the plain
model's probabilities on the flipped images, each flipped back (worked out here with the
plain `Predictor`, image by image), in `Predictor`, `segdino predict` and `segdino test`."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, make_image  # noise: no flip leaves an image unchanged
from PIL import Image

from segdino.checkpoints.load import load_segdino
from segdino.commands import main
from segdino.data.dataset import find_pairs
from segdino.data.files import read_mask
from segdino.data.synthetic import make_synthetic_dataset
from segdino.errors import UserError
from segdino.inference.predictor import Predictor
from segdino.metrics import dice
from segdino.models.segdino import SegDINO

CKPT = FIXTURES / "segdino" / "segdino_tiny_mlp.pth"
# numpy axes of an H x W x 3 image that each view mirrors: 1 horizontal, 0 vertical
VIEWS = {"flip": [(), (1,)], "flip2": [(), (1,), (0,), (0, 1)]}


@pytest.fixture(scope="module")
def model() -> SegDINO:
    small = load_segdino(CKPT)
    small.preprocessing.input_size = (64, 64)  # for speed
    return small


def by_hand(model: SegDINO, image: np.ndarray, mode: str) -> np.ndarray:
    """The plain model run on each mirrored image separately, mirrored back, averaged."""
    plain = Predictor(model, "cpu", precision="fp32")
    views = []
    for axes in VIEWS[mode]:
        _, prob = plain(np.ascontiguousarray(np.flip(image, axes)), return_probabilities=True)
        views.append(np.flip(prob, axes))
    return np.mean(views, axis=0)


@pytest.mark.parametrize("mode", list(VIEWS))
def test_tta_is_the_mean_of_the_flipped_views(model: SegDINO, mode: str) -> None:
    images = [make_image(h, w, k) for k, (h, w) in enumerate([(40, 50), (33, 97)])]
    tta = Predictor(model, "cpu", batch_size=2, precision="fp32", tta=mode)
    plain = Predictor(model, "cpu", batch_size=2, precision="fp32")
    for image, (mask, prob) in zip(images, tta(images, return_probabilities=True), strict=True):
        expected = by_hand(model, image, mode)
        # 1e-6: PIL's resize of a mirrored image is the mirrored resize up to float rounding
        np.testing.assert_allclose(prob, expected, atol=1e-6, rtol=0)
        assert np.array_equal(mask, prob > 0.5)
        assert np.abs(prob - plain(image, return_probabilities=True)[1]).max() > 1e-3


def test_unknown_tta_is_refused(model: SegDINO) -> None:
    with pytest.raises(UserError, match="--tta rot90: expected one of none, flip, flip2"):
        Predictor(model, "cpu", tta="rot90")


def test_predict_command_takes_tta(tmp_path: Path) -> None:
    image = make_image(36, 52, 7)
    Image.fromarray(image).save(tmp_path / "x.png")
    assert main(["predict", str(CKPT), str(tmp_path / "x.png"), "--out", str(tmp_path / "out"),
                 "--tta", "flip2", "--probabilities", "--device", "cpu", "--precision",
                 "fp32"]) == 0
    expected = by_hand(load_segdino(CKPT), image, "flip2")  # the CLI's 256 x 256 input
    with Image.open(tmp_path / "out" / "x_prob.png") as im:
        assert np.abs(np.asarray(im) - expected * 255).max() <= 0.5 + 1e-3
    with Image.open(tmp_path / "out" / "x.png") as im:
        decided = np.abs(expected - 0.5) > 1e-5
        assert np.array_equal((np.asarray(im) == 255)[decided], (expected > 0.5)[decided])


def test_test_command_scores_tta_masks(tmp_path: Path, model: SegDINO) -> None:
    make_synthetic_dataset(tmp_path / "data" / "synth", n_train=1, n_val=1, n_test=3,
                           size=(40, 48), seed=2)
    assert main(["test", "--ckpt", str(CKPT), "--data-dir", str(tmp_path / "data"),
                 "--dataset", "synth", "--input-h", "64", "--input-w", "64", "--tta", "flip",
                 "--num-workers", "0", "--save-root", str(tmp_path), "--name", "t",
                 "--worst", "0", "--bootstrap", "100", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["provenance"]["tta"] == "flip"
    with open(tmp_path / "t" / "metrics.csv", newline="") as f:
        rows = {row["image"]: row for row in csv.DictReader(f)}
    small = copy.deepcopy(model)
    for image_path, mask_path in find_pairs(tmp_path / "data" / "synth" / "test"):
        image = np.asarray(Image.open(image_path).convert("RGB"))
        pred = by_hand(small, image, "flip") > 0.5
        assert float(rows[image_path.name]["dice"]) == pytest.approx(
            dice(pred, read_mask(mask_path)), abs=1e-6)
