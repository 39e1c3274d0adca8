"""Calibration: temperature scaling and pixel-level expected calibration error (ECE).

A segmentation network's probabilities are often overconfident. One temperature `T` divides
the logits (`Preprocessing.temperature`): it changes how sure the model says it is, never
which class wins at threshold 0.5 or under argmax. `T` is fitted on held-out predictions
(cross-validation's out-of-fold ones) by minimising their negative log-likelihood, a smooth
one-dimensional problem: SciPy's bounded Brent search over log T.

ECE bins pixels by their confidence (the winning class's probability) into equal-width bins
and averages |accuracy - confidence| over the bins, weighted by their pixel counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

IGNORE = -100  # cross-entropy's ignore_index: the masks' ignored pixels
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
ECE_BINS = 15


def negative_log_likelihood(logits: torch.Tensor, targets: torch.Tensor,
                            temperature: float = 1.0) -> float:
    """Mean NLL per pixel of `targets` under `logits / temperature`: logits (N, 1, ...)
    with 0/1 targets of the same shape (sigmoid), or (N, K, ...) with class targets (N, ...)
    (softmax; IGNORE pixels left out)."""
    scaled = logits.double() / temperature
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(scaled, targets.double()).item()
    return F.cross_entropy(scaled, targets.long(), ignore_index=IGNORE).item()


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature (0.05 to 20) that minimises the NLL of `targets` (see
    `negative_log_likelihood` for the shapes)."""
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, targets, math.exp(log_t)),
        bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return math.exp(result.x)


def expected_calibration_error(logits: torch.Tensor, targets: torch.Tensor,
                               temperature: float = 1.0, bins: int = ECE_BINS) -> float:
    """Pixel-level ECE of `logits / temperature` (shapes as `negative_log_likelihood`)."""
    scaled = logits.double() / temperature
    if logits.shape[1] == 1:
        p = torch.sigmoid(scaled).flatten()
        truth = targets.flatten() > 0.5
        confidence, correct = torch.maximum(p, 1 - p), (p > 0.5) == truth
    else:
        probs = scaled.softmax(1)
        confidence, predicted = probs.max(1)
        keep = targets != IGNORE
        confidence, correct = confidence[keep], (predicted == targets)[keep]
    # confidence is at least 1/K: equal-width bins over [0, 1], the top one closed
    which = (confidence * bins).long().clamp(max=bins - 1)
    n = torch.bincount(which, minlength=bins).double()
    conf_sum = torch.bincount(which, weights=confidence, minlength=bins)
    hit_sum = torch.bincount(which, weights=correct.double(), minlength=bins)
    return ((conf_sum - hit_sum).abs().sum() / n.sum()).item()
