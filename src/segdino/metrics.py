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

HD95 comes in two variants:

- `hd95` (the default): the field's standard, as MONAI's `compute_hausdorff_distance(...,
  percentile=95)` and medpy's `hd95` define it. The surface of a mask is its foreground pixels
  that touch the background (4-connectivity; the image border counts as background); the
  result is the larger of the two directed 95th percentiles of exact Euclidean distances
  between the surfaces, in pixels or, with `spacing`, in physical units.
  (Computed on the masks' bounding box only, with the same result: `surface_distance`.)
- `hd95_reference`: SegDINO v1's variant, kept to reproduce published numbers. It pools both
  directions' distances between OpenCV *external* contours (holes ignored), measured with
  OpenCV's approximate 5 x 5 distance transform, and takes one 95th percentile.

Where HD95 has no finite value the standard variant says so: nan when both masks are empty
(no surface to measure), inf when exactly one is. `summarise` counts both kinds instead of
dropping them. (MONAI 1.x returns nan for the one-empty case too; inf keeps it apart from the
both-empty one. The reference returns 0 for both-empty and inf for one-empty.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from segdino.errors import UserError
from segdino.surface_distance import surface_distances

EPS = 1e-6


def _as_masks(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.ndim != 2 or pred.shape != truth.shape:
        raise ValueError(
            f"expected two H x W masks of one size, got {pred.shape} and {truth.shape}"
        )
    return pred, truth


def _ratio(numerator: int, denominator: int) -> float:
    return (numerator + EPS) / (denominator + EPS)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice = (2 |P & T| + eps) / (|P| + |T| + eps)."""
    pred, truth = _as_masks(pred, truth)
    overlap = int(np.count_nonzero(pred & truth))
    return _ratio(2 * overlap, int(np.count_nonzero(pred)) + int(np.count_nonzero(truth)))


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU = (|P & T| + eps) / (|P | T| + eps)."""
    pred, truth = _as_masks(pred, truth)
    return _ratio(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred | truth)))


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Precision = (|P & T| + eps) / (|P| + eps): 1 when the prediction is empty."""
    pred, truth = _as_masks(pred, truth)
    return _ratio(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred)))


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Recall = (|P & T| + eps) / (|T| + eps): 1 when the truth is empty."""
    pred, truth = _as_masks(pred, truth)
    return _ratio(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(truth)))


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 2 or not all(math.isfinite(s) and s > 0 for s in values):
        raise UserError(
            f"--spacing needs two positive numbers (row and column pixel size), got {spacing}"
        )
    return values[0], values[1]


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the masks' surfaces.

    `spacing` is the pixel size along (rows, columns); distances are in its unit.
    Returns nan when both masks are empty and inf when exactly one is.
    """
    pred, truth = _as_masks(pred, truth)
    spacing = _check_spacing(spacing)
    if not pred.any() and not truth.any():
        return math.nan
    if not pred.any() or not truth.any():
        return math.inf
    to_truth, to_pred = surface_distances(pred, truth, spacing)
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def hd95_reference(pred: np.ndarray, truth: np.ndarray) -> float:
    """SegDINO v1's HD95, in pixels, reproduced exactly (needs OpenCV).

    0 when both masks are empty, inf when exactly one is. Holes are ignored, so a ring
    scored against the filled disc gets 0: prefer `hd95` for new results.
    """
    pred, truth = _as_masks(pred, truth)
    try:
        import cv2  # optional (a test extra): the standard metrics must not need it
    except ImportError:
        raise UserError(
            "--hd95 reference needs OpenCV: pip install opencv-python-headless"
        ) from None
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return math.inf

    def contour(mask: np.ndarray) -> np.ndarray:
        contours, _ = cv2.findContours(
            mask.astype(np.uint8) * 255, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        drawn = np.zeros(mask.shape, dtype=np.uint8)
        cv2.drawContours(drawn, contours, -1, color=1, thickness=1)
        return drawn > 0

    def distance_to(line: np.ndarray) -> np.ndarray:
        return cv2.distanceTransform((~line).astype(np.uint8), cv2.DIST_L2, 5)

    pred_line, truth_line = contour(pred), contour(truth)
    # One percentile over both directions pooled, in float32 as OpenCV returns them:
    # that is what the reference does, not the max of two directed percentiles.
    pooled = np.concatenate(
        [distance_to(truth_line)[pred_line], distance_to(pred_line)[truth_line]]
    )
    return float(np.percentile(pooled, 95))


@dataclass(frozen=True)
class ImageScores:
    """The metrics of one image (HD95 may be nan or inf: see the module docstring)."""

    dice: float
    iou: float
    precision: float
    recall: float
    hd95: float


Scores = ImageScores | list[ImageScores]  # one image's: binary, or per class


def _hd95_reference_checked(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]
) -> float:
    if tuple(float(s) for s in spacing) != (1.0, 1.0):
        raise UserError("--spacing cannot be used with --hd95 reference (it measures pixels)")
    return hd95_reference(pred, truth)


HD95_VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray, tuple[float, float]], float]] = {
    "standard": hd95,
    "reference": _hd95_reference_checked,
}


def score(
    pred: np.ndarray,
    truth: np.ndarray,
    hd95: str = "standard",
    spacing: tuple[float, float] = (1.0, 1.0),
) -> ImageScores:
    """All metrics of one image; `hd95` picks the variant ("standard" or "reference")."""
    # `hd95` is named after the CLI's `--hd95` and hides the function: dispatch by table.
    if hd95 not in HD95_VARIANTS:
        raise UserError(f"--hd95 must be one of {', '.join(HD95_VARIANTS)}, got {hd95!r}")
    pred, truth = _as_masks(pred, truth)
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
