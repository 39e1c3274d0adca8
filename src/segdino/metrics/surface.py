"""HD95, the 95th-percentile Hausdorff distance, in the four variants `--hd95` offers.

- `standard` (`hd95`, the default): MONAI's `compute_hausdorff_distance(..., percentile=95)`.
  The surface of a mask is its foreground pixels that touch the background (4-connectivity;
  the image border counts as background); the result is the larger of the two directed 95th
  percentiles of exact Euclidean distances between the surfaces, in pixels or, with
  `spacing`, in physical units.
- `medpy` (`hd95_medpy`): medpy's `hd95`. The same surfaces and distances, but both
  directions pooled into one 95th percentile (lower than or equal to the standard one in most
  cases, not all).
- `v2` (`hd95_v2`): SegDINO v2's test script, kept to compare with its published numbers: the
  same pooled value as medpy's, in pixels.
- `reference` (`hd95_reference`): SegDINO v1's test script, kept to reproduce published
  numbers. It pools both directions' distances between OpenCV *external* contours (holes
  ignored), measured with OpenCV's approximate 5 x 5 distance transform.

Where there is no surface to measure, the variants differ. `standard` and `medpy` say so:
nan when both masks are empty, inf when exactly one is (medpy itself raises on either; these
values let a report count such images as `standard`'s are counted, instead of failing).
`v2` and `reference` return what their scripts return: 0 when both are empty, inf when one
is. (MONAI 1.x returns nan for the one-empty case too; inf keeps it apart from both-empty.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial import cKDTree

from segdino.errors import UserError
from segdino.metrics.overlap import as_masks


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 2 or not all(math.isfinite(s) and s > 0 for s in values):
        raise UserError(
            f"--spacing needs two positive numbers (row and column pixel size), got {spacing}"
        )
    return values[0], values[1]


def _without_surface(pred: np.ndarray, truth: np.ndarray, both_empty: float) -> float | None:
    """The variant's value when a mask is empty (`both_empty`, or inf for one); else None."""
    if not pred.any() and not truth.any():
        return both_empty
    if not pred.any() or not truth.any():
        return math.inf
    return None


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a background 4-neighbour, the outside of the image counting as
    background: exactly `mask ^ binary_erosion(mask)` with the 4-connected cross and
    `border_value=0` (MONAI's edges, medpy's `connectivity=1` border, SegDINO v2's
    `mask - binary_erosion(mask)`), by shifted copies, several times faster."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1]
                         & mask[1:-1, :-2] & mask[1:-1, 2:])
    return mask & ~inner


def bounding_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns of a mask's foreground, as slices; None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _pixels(mask: np.ndarray) -> np.ndarray:
    """The (row, column) indices of a mask's pixels, N x 2 (`np.argwhere`'s, faster)."""
    return np.stack(np.divmod(np.flatnonzero(mask), mask.shape[1]), axis=1)


def _nearest_distances(points: np.ndarray, targets: np.ndarray,
                       spacing: tuple[float, float]) -> np.ndarray:
    """For each of `points` (N x 2 pixel indices), the distance to the nearest of `targets`,
    computed as `ndimage.distance_transform_edt` computes it from its nearest pixel
    (`sqrt((dr * sr)**2 + (dc * sc)**2)` in float64), so that the values are the same."""
    scale = np.asarray(spacing)
    # unbalanced and not compacted: built in half the time, queried as fast for surfaces
    tree = cKDTree(targets * scale, balanced_tree=False, compact_nodes=False)
    _, nearest = tree.query(points * scale)
    offsets = (targets[nearest] - points).astype(np.float64) * scale
    return np.sqrt((offsets * offsets).sum(1))


def _surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface pixel of `pred` to `truth`'s surface, and back.

    The surfaces are found on the bounding box of both masks only (the pixels just outside
    it are background, as the erosion takes the outside of the image to be), and the nearest
    surface pixel by a KD-tree of the surface pixels: the cost grows with the surfaces'
    length, where a distance transform's grows with the box's area (on a Kvasir-sized image,
    tens of milliseconds)."""
    box = bounding_box(pred | truth)  # not None: neither mask is empty
    pred_points, truth_points = _pixels(_surface(pred[box])), _pixels(_surface(truth[box]))
    return (_nearest_distances(pred_points, truth_points, spacing),
            _nearest_distances(truth_points, pred_points, spacing))


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the masks' surfaces.

    `spacing` is the pixel size along (rows, columns); distances are in its unit.
    Returns nan when both masks are empty and inf when exactly one is.
    """
    pred, truth = as_masks(pred, truth)
    spacing = _check_spacing(spacing)
    if (empty := _without_surface(pred, truth, both_empty=math.nan)) is not None:
        return empty
    to_truth, to_pred = _surface_distances(pred, truth, spacing)
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def hd95_medpy(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> float:
    """medpy's `hd95`: one 95th percentile of both directions' surface distances pooled.

    nan when both masks are empty and inf when exactly one is, where medpy raises.
    """
    pred, truth = as_masks(pred, truth)
    spacing = _check_spacing(spacing)
    if (empty := _without_surface(pred, truth, both_empty=math.nan)) is not None:
        return empty
    return float(np.percentile(np.concatenate(_surface_distances(pred, truth, spacing)), 95))


def hd95_v2(pred: np.ndarray, truth: np.ndarray) -> float:
    """SegDINO v2's HD95, in pixels: medpy's pooled value; 0 when both masks are empty, inf
    when exactly one is."""
    pred, truth = as_masks(pred, truth)
    if (empty := _without_surface(pred, truth, both_empty=0.0)) is not None:
        return empty
    return hd95_medpy(pred, truth)


def hd95_reference(pred: np.ndarray, truth: np.ndarray) -> float:
    """SegDINO v1's HD95, in pixels, reproduced exactly (needs OpenCV).

    0 when both masks are empty, inf when exactly one is. Holes are ignored, so a ring
    scored against the filled disc gets 0: prefer `hd95` for new results.
    """
    pred, truth = as_masks(pred, truth)
    try:
        import cv2  # optional (a test extra): the standard metrics must not need it
    except ImportError:
        raise UserError(
            "--hd95 reference needs OpenCV: pip install opencv-python-headless"
        ) from None
    if (empty := _without_surface(pred, truth, both_empty=0.0)) is not None:
        return empty

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


Variant = Callable[[np.ndarray, np.ndarray, tuple[float, float]], float]


def _in_pixels(name: str, variant: Callable[[np.ndarray, np.ndarray], float]) -> Variant:
    """`variant` behind the common signature, refusing a spacing: its script measures pixels."""

    def checked(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float]) -> float:
        if tuple(float(s) for s in spacing) != (1.0, 1.0):
            raise UserError(f"--spacing cannot be used with --hd95 {name} (it measures pixels)")
        return variant(pred, truth)

    return checked


# `--hd95` name -> the variant, called as (pred, truth, spacing)
HD95_VARIANTS: dict[str, Variant] = {
    "standard": hd95,
    "medpy": hd95_medpy,
    "v2": _in_pixels("v2", hd95_v2),
    "reference": _in_pixels("reference", hd95_reference),
}
