"""Uncertainty: the entropy map against SciPy's entropy, the members' disagreement by hand,
and `predict --uncertainty` on an ensemble: its maps and review.csv against the Predictor's
own probabilities, most uncertain first; the members' probabilities under TTA by hand; and
`segdino test`'s uncertainty column against SciPy's entropy of the Predictor's
probabilities."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, random_member
from PIL import Image
from scipy.stats import entropy

from segdino.checkpoints.ensemble import combine
from segdino.commands import main
from segdino.data.dataset import find_pairs
from segdino.inference.predictor import Predictor
from segdino.inference.uncertainty import disagreement_map, entropy_map, finds_bad_cases


def test_entropy_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((5, 7))
    np.testing.assert_allclose(entropy_map(p), entropy(np.stack([p, 1 - p]), base=2, axis=0),
                               rtol=1e-9)
    k = rng.random((4, 5, 7))
    k /= k.sum(0)
    np.testing.assert_allclose(entropy_map(k), entropy(k, base=4, axis=0), rtol=1e-9)


def test_disagreement_by_hand() -> None:
    sure_yes, sure_no = np.full((2, 2), 1.0), np.zeros((2, 2))
    unsure = np.full((2, 2), 0.5)
    np.testing.assert_allclose(disagreement_map([sure_yes, sure_no]), 1.0, atol=1e-9)
    np.testing.assert_allclose(disagreement_map([unsure, unsure]), 0.0, atol=1e-12)
    # members 0.2 and 0.6: H(0.4) - (H(0.2) + H(0.6)) / 2, in bits
    h = lambda q: -(q * np.log2(q) + (1 - q) * np.log2(1 - q))  # noqa: E731
    got = disagreement_map([np.full((1, 1), 0.2), np.full((1, 1), 0.6)])
    assert got[0, 0] == pytest.approx(h(0.4) - (h(0.2) + h(0.6)) / 2)


def test_predict_uncertainty_on_an_ensemble(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    paths = [tiny_run["ckpt"], random_member(tiny_run["weights"], tmp_path / "b.safetensors", 2,
                                             like=tiny_run["ckpt"])]
    ckpt = tmp_path / "e.safetensors"
    assert main(["ensemble", *map(str, paths), "--out", str(ckpt)]) == 0
    images = tiny_run["data"] / "synth" / "test" / "image"
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(images), "--out", str(out), "--uncertainty",
                 "--precision", "fp32"]) == 0
    with (out / "review.csv").open() as f:
        rows = list(csv.DictReader(f))
    files = sorted(images.iterdir())
    assert sorted(r["image"] for r in rows) == sorted(map(str, files))
    scores = [float(r["uncertainty"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", precision="fp32")
    members = [Predictor.from_checkpoint(p, device="cpu", precision="fp32") for p in paths]
    for file in files:
        row = next(r for r in rows if r["image"] == str(file))
        _, prob = predictor(file, return_probabilities=True)
        assert float(row["uncertainty"]) == pytest.approx(entropy_map(prob).mean(), abs=1e-6)
        each = [m(file, return_probabilities=True)[1] for m in members]
        assert float(row["disagreement"]) == pytest.approx(disagreement_map(each).mean(),
                                                           abs=1e-5)
        png = np.asarray(Image.open(out / f"{file.stem}_uncertainty.png"))
        np.testing.assert_array_equal(png, np.round(entropy_map(prob) * 255).astype(np.uint8))
        assert (out / f"{file.stem}_disagreement.png").is_file()
    # a single model has no members to disagree
    assert main(["predict", str(paths[0]), str(images), "--out", str(tmp_path / "one"),
                 "--uncertainty"]) == 0
    assert not list((tmp_path / "one").glob("*_disagreement.png"))
    # review.csv that predict did not write is the user's
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "review.csv").write_text("mine")
    assert main(["predict", str(paths[0]), str(images), "--out", str(tmp_path / "mine"),
                 "--uncertainty"]) == 2
    assert (tmp_path / "mine" / "review.csv").read_text() == "mine"


def test_finding_bad_cases_against_counting() -> None:
    rng = np.random.default_rng(1)
    dice = rng.random(40)
    scores = -dice + 0.5 * rng.random(40)
    scores[:4] = scores[4]  # ties
    found = finds_bad_cases(scores, dice)
    bad = dice < np.median(dice)
    pairs = [(b, g) for b in scores[bad] for g in scores[~bad]]
    auroc = sum(1.0 if b > g else 0.5 if b == g else 0.0 for b, g in pairs) / len(pairs)
    assert found["auroc_dice_below_median"] == pytest.approx(auroc)

    def ranks(x: np.ndarray) -> np.ndarray:  # average ranks of ties
        return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])

    assert found["spearman"] == pytest.approx(np.corrcoef(ranks(scores), ranks(dice))[0, 1])
    assert found["spearman"] < -0.5


def test_member_probabilities_take_tta(tmp_path: Path, tiny_run: dict[str, Path]) -> None:
    """Each member's probability under --tta flip2 is the mean of its plain probabilities of
    the four mirrored images, each mirrored back (numpy axes: 1 horizontal, 0 vertical)."""
    paths = [tiny_run["ckpt"], random_member(tiny_run["weights"], tmp_path / "b.safetensors", 2,
                                             like=tiny_run["ckpt"])]
    ensemble = combine(paths)
    images = [make_image(h, w, k) for k, (h, w) in enumerate([(40, 50), (33, 97)])]
    tta = Predictor(ensemble, "cpu", batch_size=2, precision="fp32", tta="flip2")
    plain = Predictor(ensemble, "cpu", batch_size=2, precision="fp32")
    got = tta.member_probabilities([Image.fromarray(image) for image in images])
    for image, members in zip(images, got, strict=True):
        views = [[np.flip(p, axes) for p in plain.member_probabilities(
                     [Image.fromarray(np.ascontiguousarray(np.flip(image, axes)))])[0]]
                 for axes in [(), (1,), (0,), (0, 1)]]
        expected = np.mean(views, axis=0)  # (members, H, W)
        assert len(members) == 2 and members[0].shape == image.shape[:2]
        np.testing.assert_allclose(members, expected, atol=1e-6, rtol=0)
        assert np.abs(np.array(members) - views[0]).max() > 1e-3  # not the plain view


def test_test_reports_each_images_uncertainty(tmp_path: Path, tiny_run: dict[str, Path],
                                              capsys: pytest.CaptureFixture) -> None:
    paths = [tiny_run["ckpt"], random_member(tiny_run["weights"], tmp_path / "b.safetensors", 2,
                                             like=tiny_run["ckpt"])]
    ckpt = tmp_path / "e.safetensors"
    assert main(["ensemble", *map(str, paths), "--out", str(ckpt)]) == 0
    assert main(["test", "--ckpt", str(ckpt), "--data-dir", str(tiny_run["data"]), "--dataset",
                 "synth", "--tta", "flip", "--num-workers", "0", "--save-root", str(tmp_path),
                 "--name", "t", "--worst", "0", "--bootstrap", "100", "--no-progress"]) == 0
    with (tmp_path / "t" / "metrics.csv").open(newline="") as f:
        rows = {row["image"]: row for row in csv.DictReader(f)}
    assert list(next(iter(rows.values())))[-1] == "uncertainty"  # the last column
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", precision="fp32", tta="flip")
    scores, dice = [], []
    for image, _ in find_pairs(tiny_run["data"] / "synth" / "test"):
        _, prob = predictor(image, return_probabilities=True)  # ensemble mean, flips averaged
        expected = entropy(np.stack([prob, 1 - prob]), base=2, axis=0).mean()
        scores.append(float(rows[image.name]["uncertainty"]))
        dice.append(float(rows[image.name]["dice"]))
        assert scores[-1] == pytest.approx(expected, abs=1e-6)
    assert len(set(scores)) == len(scores) == 4
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())["uncertainty"]
    for statistic, value in (("mean", np.mean(scores)), ("sd", np.std(scores, ddof=1)),
                             ("median", np.median(scores))):
        assert summary[statistic] == pytest.approx(value, abs=1e-6)
        assert float(rows[statistic.upper()]["uncertainty"]) == pytest.approx(value, abs=1e-6)
    assert summary["auroc_dice_below_median"] == pytest.approx(
        finds_bad_cases(scores, dice)["auroc_dice_below_median"], abs=1e-6)
    # compare leaves the column out: it is no metric
    assert main(["compare", str(tmp_path / "t"), str(tmp_path / "t"), "--out",
                 str(tmp_path / "c.json"), "--bootstrap", "100"]) == 0
    compared = json.loads((tmp_path / "c.json").read_text())["metrics"]
    assert "uncertainty" not in compared and "dice" in compared
