"""Segmentation metrics for one binary mask pair, and their mean over a test set.

All functions take two H x W masks, `pred` and `truth` (boolean, or anything whose nonzero
entries mean foreground), and use NumPy and SciPy only.

Dice, IoU, precision and recall follow the SegDINO v1 test script's `eps = 1e-6`
convention: `(overlap + eps) / (size + eps)`. A ratio whose denominator is empty is then 1
(nothing to get wrong) and a ratio whose numerator alone is empty is about 0, so no image
ever yields nan and the means match the reference's:

- both masks empty: Dice = IoU = precision = recall = 1;
- prediction empty, truth not: Dice, IoU and recall ~ 0, precision 1 (no false positive);
- truth empty, prediction not: Dice, IoU and precision ~ 0, recall 1 (nothing was missed).

A K-class prediction (K >= 2, class-index maps, 0 the background) is scored class by class:
each foreground class c = 1..K-1 as the binary pair (pred == c, truth == c), with the same
functions and conventions, then averaged over the classes (`class_scores`, `mean_scores`,
`summarise_classes`). Truth pixels that hold no class (ignored ones: any value outside
0..K-1) count in neither mask.

HD95 comes in four variants (`surface.HD95_VARIANTS`, `--hd95`): the field's standard
(MONAI's, the default), medpy's, SegDINO v2's and SegDINO v1's; `surface` says how they
differ, and what each returns when a mask is empty (nan, inf or 0). `summarise` counts the nan
and inf values instead of dropping them silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from segdino.errors import UserError
from segdino.metrics.overlap import as_masks, dice, iou, precision, recall
from segdino.metrics.surface import HD95_VARIANTS, hd95, hd95_medpy, hd95_reference, hd95_v2

__all__ = [
    "HD95_VARIANTS", "METRICS", "ImageScores", "Scores", "class_pairs", "class_scores", "dice",
    "foreground_mean", "hd95", "hd95_medpy", "hd95_reference", "hd95_v2", "image_scores", "iou",
    "mean_scores",
    "precision", "recall", "score", "summarise", "summarise_classes",
]


@dataclass(frozen=True)
class ImageScores:
    """The metrics of one image (HD95 may be nan or inf: see `segdino.metrics.surface`)."""

    dice: float
    iou: float
    precision: float
    recall: float
    hd95: float


Scores = ImageScores | list[ImageScores]  # one image's: binary, or per class


def score(
    pred: np.ndarray,
    truth: np.ndarray,
    hd95: str = "standard",
    spacing: tuple[float, float] = (1.0, 1.0),
) -> ImageScores:
    """All metrics of one image; `hd95` picks the variant (a key of `HD95_VARIANTS`)."""
    # `hd95` is named after the CLI's `--hd95` and hides the function: dispatch by table.
    if hd95 not in HD95_VARIANTS:
        raise UserError(f"--hd95 must be one of {', '.join(HD95_VARIANTS)}, got {hd95!r}")
    pred, truth = as_masks(pred, truth)
    return ImageScores(
        dice=dice(pred, truth),
        iou=iou(pred, truth),
        precision=precision(pred, truth),
        recall=recall(pred, truth),
        hd95=HD95_VARIANTS[hd95](pred, truth, spacing),
    )


METRICS = tuple(f.name for f in fields(ImageScores))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _finite_mean(values: Sequence[float]) -> float:
    return _mean([v for v in values if math.isfinite(v)])


def summarise(scores: Sequence[ImageScores]) -> dict[str, float | int]:
    """Mean of each metric over the images.

    HD95's mean is over its finite values only; `hd95_undefined` (nan: both masks empty) and
    `hd95_infinite` (inf: one mask empty) count the images left out of it, so that the
    report can say how many there were. Means of an empty list are nan.
    """
    hd = [s.hd95 for s in scores]
    return {
        "images": len(scores),
        "dice": _mean([s.dice for s in scores]),
        "iou": _mean([s.iou for s in scores]),
        "precision": _mean([s.precision for s in scores]),
        "recall": _mean([s.recall for s in scores]),
        "hd95": _finite_mean(hd),
        "hd95_undefined": sum(math.isnan(h) for h in hd),
        "hd95_infinite": sum(math.isinf(h) for h in hd),
    }


# ---- K classes: each foreground class scored as a binary mask -------------------------------


def class_pairs(
    pred: np.ndarray, truth: np.ndarray, num_classes: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred == c, truth == c) for each foreground class c = 1..K-1 of two H x W class-index
    maps; truth pixels holding no class (ignored: outside 0..K-1) count in neither."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.ndim != 2 or pred.shape != truth.shape:
        raise ValueError(
            f"expected two H x W class maps of one size, got {pred.shape} and {truth.shape}"
        )
    valid = (truth >= 0) & (truth < num_classes)
    return [((pred == c) & valid, truth == c) for c in range(1, num_classes)]


def foreground_mean(
    metric: Callable[[np.ndarray, np.ndarray], float],
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int = 1,
) -> float:
    """`metric` (e.g. `dice`) of one image: of its masks for one class, else averaged over
    the foreground classes of its class maps."""
    if num_classes == 1:
        return metric(pred, truth)
    return _mean([metric(p, t) for p, t in class_pairs(pred, truth, num_classes)])


def class_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    hd95: str = "standard",
    spacing: tuple[float, float] = (1.0, 1.0),
) -> list[ImageScores]:
    """`score` of each foreground class 1..K-1 of one image's class maps, in class order."""
    return [score(p, t, hd95, spacing) for p, t in class_pairs(pred, truth, num_classes)]


def image_scores(pred: np.ndarray, truth: np.ndarray, num_classes: int = 1,
                 hd95: str = "standard", spacing: tuple[float, float] = (1.0, 1.0)) -> Scores:
    """One image's scores: `score` of its masks (one class), else `class_scores`."""
    if num_classes == 1:
        return score(pred, truth, hd95, spacing)
    return class_scores(pred, truth, num_classes, hd95, spacing)


def mean_scores(scores: Sequence[ImageScores]) -> ImageScores:
    """Scores averaged over classes; HD95 over its finite values (nan when there are none)."""
    return ImageScores(**{
        name: (_finite_mean if name == "hd95" else _mean)([getattr(s, name) for s in scores])
        for name in METRICS
    })


def summarise_classes(
    per_image: Sequence[Sequence[ImageScores]], num_classes: int
) -> dict[str, object]:
    """`summarise` of each foreground class over the images (`per_class`, keyed "1".."K-1"),
    and each metric's mean over the classes (HD95: over the classes' finite means)."""
    per_class = {
        str(c): summarise([scores[c - 1] for scores in per_image])
        for c in range(1, num_classes)
    }
    means = mean_scores([ImageScores(**{n: s[n] for n in METRICS}) for s in per_class.values()])
    return {"images": len(per_image), **asdict(means), "per_class": per_class}
