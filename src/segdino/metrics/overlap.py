"""Dice, IoU, precision and recall of one binary mask pair, with the SegDINO test scripts'
`eps = 1e-6` (see the package docstring for what that gives on empty masks)."""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def as_masks(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two H x W boolean masks of one size (nonzero entries mean foreground)."""
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
    pred, truth = as_masks(pred, truth)
    overlap = int(np.count_nonzero(pred & truth))
    return _ratio(2 * overlap, int(np.count_nonzero(pred)) + int(np.count_nonzero(truth)))


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU = (|P & T| + eps) / (|P | T| + eps)."""
    pred, truth = as_masks(pred, truth)
    return _ratio(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred | truth)))


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Precision = (|P & T| + eps) / (|P| + eps): 1 when the prediction is empty."""
    pred, truth = as_masks(pred, truth)
    return _ratio(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred)))


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Recall = (|P & T| + eps) / (|T| + eps): 1 when the truth is empty."""
    pred, truth = as_masks(pred, truth)
    return _ratio(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(truth)))
