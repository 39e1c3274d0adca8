"""Statistics over images: a percentile-bootstrap confidence interval of a mean, and the
Wilcoxon signed-rank test of paired differences. NumPy only; each computes what
`scipy.stats` computes by default (SciPy 1.17), which the tests check.

The bootstrap draws `resamples` resamples of the n values with replacement from
`numpy.random.default_rng(seed)`, in batches of rows as `scipy.stats.bootstrap(...,
batch=resample_batch(n))` draws them, so that the same seed gives SciPy's resamples exactly.
The interval is the (2.5, 97.5) percentiles of the resampled means, interpolated linearly
between order statistics (Hyndman and Fan's type 7, NumPy's and SciPy's default).

The Wilcoxon test follows `scipy.stats.wilcoxon`'s defaults (`zero_method="wilcox"`: zero
differences are dropped before ranking; `correction=False`; two-sided; `method="auto"`):
the exact null distribution when there are at most 50 differences with no ties and no
zeros; with ties or zeros and at most 13 differences, the exact distribution of the signed
ranks as they are (all 2^n sign patterns, which is what SciPy's permutation test then
enumerates); otherwise the normal approximation with the tie correction of the variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 10_000
DRAWS_PER_BATCH = 1 << 20  # resample indices held at once: memory stays bounded for any n
EXACT_MAX_N = 50  # scipy.stats.wilcoxon's method="auto": exact up to 50 differences ...
EXACT_WITH_TIES_MAX_N = 13  # ... and up to 13 when there are ties or zeros


def resample_batch(n: int) -> int:
    """Resamples of `n` values drawn at once (`scipy.stats.bootstrap`'s `batch`)."""
    return max(1, DRAWS_PER_BATCH // max(n, 1))


def bootstrap_means(values: Sequence[float], resamples: int, seed: int) -> np.ndarray:
    """The means of `resamples` bootstrap resamples of `values` (seeded, see above)."""
    values = np.asarray(values, dtype=np.float64)
    n, rng, rows = len(values), np.random.default_rng(seed), resample_batch(len(values))
    return np.concatenate([
        values[rng.integers(0, n, (min(rows, resamples - start), n))].mean(axis=-1)
        for start in range(0, resamples, rows)])


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE
                        ) -> tuple[float, float]:
    """The central `confidence` interval of `samples`: their (1 - c)/2 and (1 + c)/2
    quantiles, linearly interpolated (type 7), in SciPy's arithmetic."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    n, alpha = len(ordered), (1 - confidence) / 2

    def quantile(p: float) -> float:
        position = p * n + (1 - p)  # 1-based (n - 1) p + 1, as scipy.stats.quantile has it
        j, g = int(position // 1) - 1, position % 1
        upper = min(j + 1, n - 1)
        return float((1 - g) * ordered[j] + g * ordered[upper])
    return quantile(alpha), quantile(1 - alpha)


def bootstrap_ci(values: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap `confidence` interval of the mean of `values`; (nan, nan) for
    fewer than two values (no spread to resample, as SciPy refuses them too)."""
    if len(values) < 2:
        return math.nan, math.nan
    return percentile_interval(bootstrap_means(values, resamples, seed), confidence)


def _average_ranks(magnitudes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..n of `magnitudes`, tied values sharing their average rank; and the size of
    each group of equal values."""
    _, inverse, counts = np.unique(magnitudes, return_inverse=True, return_counts=True)
    group_ranks = np.cumsum(counts) - (counts - 1) / 2  # the mean of each group's ranks
    return group_ranks[inverse.ravel()], counts


def _exact_p(ranks: np.ndarray, r_plus: float) -> float:
    """Two-sided p of the rank sum `r_plus` under the null that each rank's sign is a fair
    coin: the 2^n sign patterns counted exactly by their sums (in half ranks, integers)."""
    counts = np.zeros(int(round(2 * ranks.sum())) + 1, dtype=np.int64)
    counts[0] = 1
    for weight in np.rint(2 * ranks).astype(np.int64):
        counts[weight:] = counts[weight:] + counts[:len(counts) - weight]
    observed = int(round(2 * r_plus))
    total = 2.0 ** len(ranks)
    at_most, at_least = counts[:observed + 1].sum() / total, counts[observed:].sum() / total
    return float(min(1.0, 2 * min(at_most, at_least)))


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test that `differences` are centred on
    zero, as `scipy.stats.wilcoxon(differences)` gives it; nan for no differences, or when
    none is nonzero and the normal approximation applies (SciPy's answers too)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) == 0:
        return math.nan
    nonzero = d[d != 0]
    ranks, ties = _average_ranks(np.abs(nonzero))
    r_plus = float(ranks[nonzero > 0].sum())
    plain = len(nonzero) == len(d) and not (ties > 1).any()
    if len(d) <= EXACT_MAX_N and (plain or len(d) <= EXACT_WITH_TIES_MAX_N):
        return _exact_p(ranks, r_plus)
    m = len(nonzero)
    variance = (m * (m + 1) * (2 * m + 1) - float((ties ** 3 - ties).sum()) / 2) / 24
    if variance <= 0:
        return math.nan
    z = (r_plus - m * (m + 1) / 4) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))  # 2 P(Z > |z|)
