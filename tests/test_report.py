"""`segdino test`'s summary: mean, sample SD and median of each metric, checked against the
statistics module, and the bootstrap 95% CI of each mean, checked against SciPy's
`stats.bootstrap`, in summary.json, metrics.csv's last rows and the printed line."""

from __future__ import annotations

import csv
import json
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from segdino.metrics import METRICS, ImageScores
from segdino.report import format_summary, summarise_rows, write_report
from segdino.statistics import resample_batch


def random_scores(rng: np.random.Generator, n: int) -> list[ImageScores]:
    # image 1 has one empty mask (HD95 inf), image 3 both (nan): no HD95 for either
    hd = [math.inf if i == 1 else math.nan if i == 3 else rng.uniform(1, 40) for i in range(n)]
    return [ImageScores(*map(float, rng.uniform(0, 1, 4)), h) for h in hd]


def expected(values: list[float], resamples: int = 10_000, seed: int = 0) -> dict:
    ci = stats.bootstrap((np.array(values),), np.mean, n_resamples=resamples,
                         batch=resample_batch(len(values)), method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values),
            "median": statistics.median(values), "ci95": (ci.low, ci.high)}


def finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def test_binary_summary_mean_sd_median(tmp_path) -> None:
    scores = random_scores(np.random.default_rng(0), 7)
    summary = summarise_rows(scores, classes=1, resamples=3000, seed=5)
    rows = [(f"{i}.png", s) for i, s in enumerate(scores)]
    write_report(rows, summary, tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    with open(tmp_path / "metrics.csv", newline="") as f:
        table = {row["image"]: row for row in csv.DictReader(f)}
    assert list(table)[-3:] == ["MEAN", "SD", "MEDIAN"]
    assert saved["bootstrap"] == {"method": "percentile", "confidence": 0.95,
                                  "resamples": 3000, "seed": 5}
    for name in METRICS:
        truth = expected(finite([getattr(s, name) for s in scores]), 3000, 5)
        assert saved["ci95"][name] == pytest.approx(truth["ci95"], rel=1e-14), name
        for stat, row in (("mean", "MEAN"), ("sd", "SD"), ("median", "MEDIAN")):
            in_json = saved[name] if stat == "mean" else saved[stat][name]
            assert in_json == pytest.approx(truth[stat], abs=1e-12), (name, stat)
            assert float(table[row][name]) == pytest.approx(truth[stat], abs=1e-6)
    line = format_summary(summary)
    dice = expected([s.dice for s in scores], 3000, 5)
    low, high = dice["ci95"]
    assert (f"dice {dice['mean']:.4f} (95% CI {low:.4f}-{high:.4f}, sd {dice['sd']:.4f}, "
            f"median {dice['median']:.4f})" in line)
    hd = expected(finite([s.hd95 for s in scores]), 3000, 5)
    low, high = hd["ci95"]
    assert (f"HD95 {hd['mean']:.2f} px (95% CI {low:.2f}-{high:.2f}, sd {hd['sd']:.2f}, "
            f"median {hd['median']:.2f})" in line)
    assert "over 5 images; 1 with one empty mask, 1 with both empty" in line


def test_one_image_has_no_sd(tmp_path) -> None:
    scores = [ImageScores(0.5, 0.4, 0.6, 0.7, 3.0)]
    summary = summarise_rows(scores, classes=1)
    write_report([("a.png", scores[0])], summary, tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["sd"]["dice"] is None
    assert saved["ci95"]["dice"] == [None, None]  # one value: nothing to resample
    assert summary["median"]["dice"] == 0.5
    assert "dice 0.5000 (95% CI n/a, sd n/a, median 0.5000)" in format_summary(summary)


def test_class_summary_spreads_over_images(tmp_path) -> None:
    rng = np.random.default_rng(1)
    first, second = random_scores(rng, 6), random_scores(rng, 6)
    per_image = [list(pair) for pair in zip(first, second, strict=True)]
    summary = summarise_rows(per_image, classes=3)
    write_report([(f"{i}.png", s) for i, s in enumerate(per_image)], summary, tmp_path)
    with open(tmp_path / "metrics.csv", newline="") as f:
        table = {row["image"]: row for row in csv.DictReader(f)}
    for c, scores in (("1", first), ("2", second)):
        truth = expected([s.iou for s in scores])
        assert summary["per_class"][c]["sd"]["iou"] == pytest.approx(truth["sd"])
        assert float(table["MEDIAN"][f"iou_{c}"]) == pytest.approx(truth["median"], abs=1e-6)
        assert summary["per_class"][c]["ci95"]["iou"] == pytest.approx(truth["ci95"], rel=1e-14)
    image_means = [(a.dice + b.dice) / 2 for a, b in zip(first, second, strict=True)]
    assert summary["sd"]["dice"] == pytest.approx(statistics.stdev(image_means))
    assert summary["ci95"]["dice"] == pytest.approx(expected(image_means)["ci95"], rel=1e-14)
    assert float(table["SD"]["dice_mean"]) == pytest.approx(statistics.stdev(image_means),
                                                            abs=1e-6)
    assert float(table["MEAN"]["dice_mean"]) == pytest.approx(statistics.fmean(image_means),
                                                              abs=1e-6)
