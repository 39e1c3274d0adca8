"""How unsure a model is, per pixel and per image (`segdino predict --uncertainty`).

Per pixel: the entropy of the (mean) probability, divided by its largest value (log 2 for one
class, log K for K) so that 0 is certain and 1 is a coin toss; and for an ensemble, the
members' disagreement, the mutual information between the prediction and the member (the
entropy of the mean minus the mean of the members' entropies, divided the same way): 0 where
the members agree, whatever they say. Per image: the mean over its pixels, the score by which
`review.csv` lists the images to check first, and the `uncertainty` column of `segdino test`'s
`metrics.csv`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu, spearmanr

from segdino.atomic import write_text

REVIEW = "review.csv"
SCORE = "mean normalised entropy per image"  # what an image's uncertainty score is


def entropy_map(prob: np.ndarray) -> np.ndarray:
    """Normalised entropy per pixel of an H x W foreground probability (one class) or a
    K x H x W class probability map; in the map's precision, float32 at least (float32's
    rounding moves an image's mean by about 1e-7, at a third of float64's time: `segdino
    test` scores every image)."""
    prob = prob.astype(np.promote_types(prob.dtype, np.float32), copy=False)
    p = np.clip(prob, 1e-12, 1.0)
    if prob.ndim == 2:
        q = np.clip(1.0 - prob, 1e-12, 1.0)
        return -(p * np.log(p) + q * np.log(q)) / math.log(2)
    return -(p * np.log(p)).sum(0) / math.log(prob.shape[0])


def disagreement_map(members: Sequence[np.ndarray]) -> np.ndarray:
    """The members' normalised mutual information per pixel (their probability maps, as
    `entropy_map` takes them)."""
    mean_entropy = np.mean([entropy_map(m) for m in members], axis=0)
    return np.clip(entropy_map(np.mean(members, axis=0)) - mean_entropy, 0.0, 1.0)


def write_review(rows: list[dict], path: Path) -> None:
    """`review.csv`: a row per image (`image`, `uncertainty`, and `disagreement` for an
    ensemble), most uncertain first."""
    rows = sorted(rows, key=lambda r: -r["uncertainty"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v if k == "image" else f"{v:.6f}" for k, v in row.items()})
    write_text(path, buffer.getvalue())


def finds_bad_cases(scores: Sequence[float], dice: Sequence[float]) -> dict[str, float]:
    """How well per-image uncertainty `scores` find the images of low `dice`: Spearman's
    rank correlation (negative when the unsure images are the bad ones) and the AUROC of the
    score for "Dice below the median" (0.5: no better than chance; ties count a half)."""
    scores, dice = np.asarray(scores, float), np.asarray(dice, float)
    bad = dice < np.median(dice)
    if bad.all() or not bad.any():
        return {"spearman": math.nan, "auroc_dice_below_median": math.nan}
    u = mannwhitneyu(scores[bad], scores[~bad]).statistic
    return {"spearman": float(spearmanr(scores, dice).statistic),
            "auroc_dice_below_median": float(u / (bad.sum() * (~bad).sum()))}


def summarise_scores(scores: Sequence[float], dice: Sequence[float]) -> dict:
    """A test report's `uncertainty`: the per-image scores' mean, sample SD (n - 1) and
    median, and how well they find the images of low `dice` (`finds_bad_cases`)."""
    values = np.asarray(scores, float)
    return {"score": SCORE, "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
            "median": float(np.median(values)), **finds_bad_cases(values, dice)}
