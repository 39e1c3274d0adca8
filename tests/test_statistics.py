"""`segdino.statistics` against SciPy: the bootstrap draws SciPy's resamples and its interval
is `scipy.stats.bootstrap(..., method="percentile")`'s; the percentile rule against values
worked out by hand; the Wilcoxon p-value is `scipy.stats.wilcoxon`'s on each of its paths
(exact, exact with ties or zeros, normal approximation with ties, zeros or many values)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from segdino.statistics import (
    bootstrap_ci,
    bootstrap_means,
    percentile_interval,
    resample_batch,
    wilcoxon_p,
)


def scipy_bootstrap(values: np.ndarray, resamples: int, seed: int):
    return stats.bootstrap((values,), np.mean, n_resamples=resamples,
                           batch=resample_batch(len(values)), method="percentile",
                           rng=np.random.default_rng(seed))


# n = 300 with 10000 resamples is drawn in two batches (3495 rows each), as SciPy is told
@pytest.mark.parametrize(("n", "resamples", "seed"), [(2, 999, 0), (37, 10_000, 1),
                                                       (300, 10_000, 7), (120, 2501, 3)])
def test_bootstrap_is_scipys(n: int, resamples: int, seed: int) -> None:
    values = np.random.default_rng(100 + n).beta(5, 2, n)  # skewed, like Dice
    ours = bootstrap_means(values, resamples, seed)
    theirs = scipy_bootstrap(values, resamples, seed)
    np.testing.assert_array_equal(ours, theirs.bootstrap_distribution)  # the same resamples
    ci = theirs.confidence_interval
    assert bootstrap_ci(values, resamples, seed) == (ci.low, ci.high)


def test_bootstrap_batches_keep_memory_bounded() -> None:
    assert resample_batch(300) * 300 <= 1 << 20 < (resample_batch(300) + 1) * 300
    assert resample_batch(5_000_000) == 1


def test_another_seed_gives_another_interval_of_the_same_size() -> None:
    values = np.random.default_rng(0).uniform(0, 1, 50)
    first, second = bootstrap_ci(values, seed=0), bootstrap_ci(values, seed=1)
    assert first != second
    # The Monte-Carlo SE of a 2.5% quantile of B = 10000 resampled means is
    # sqrt(p (1 - p) / B) / density = 0.00156 / (phi(1.96) / 0.041) = 0.0011 here (the mean's
    # SE is 0.29 / sqrt(50) = 0.041): two seeds differ by 0.0016 in SE, 0.01 is 6 SE.
    assert first == pytest.approx(second, abs=0.01)


def test_percentile_interval_by_hand() -> None:
    # 0..9999 in any order: the 2.5% point is (n - 1) 0.025 = 249.975 of the way up
    shuffled = np.random.default_rng(0).permutation(10_000).astype(float)
    assert percentile_interval(shuffled) == pytest.approx((249.975, 9749.025), abs=1e-9)
    # four values, 50%: positions 0.75 and 2.25 between the sorted 1, 2, 3, 4
    assert percentile_interval(np.array([4.0, 1.0, 3.0, 2.0]), 0.5) == (1.75, 3.25)
    assert percentile_interval(np.array([2.0, 2.0, 2.0]), 0.9) == (2.0, 2.0)


def test_no_interval_from_fewer_than_two_values() -> None:
    assert all(math.isnan(v) for v in bootstrap_ci([0.7]) + bootstrap_ci([]))


def _data(seed: int, n: int, zeros: int = 0, decimals: int | None = None) -> np.ndarray:
    d = np.random.default_rng(seed).normal(0.03, 0.1, n)
    if decimals is not None:
        d = np.round(d, decimals)  # ties in |d|, as metrics.csv's 6 decimals make them
    d[:zeros] = 0.0
    return d


WILCOXON_CASES = {  # name: differences, and the path scipy.stats.wilcoxon takes
    "exact, n=9": _data(0, 9),
    "exact, n=50 (the largest exact)": _data(1, 50),
    "exact, one pair": np.array([0.4]),
    "normal, n=51": _data(2, 51),
    "normal, n=400": _data(3, 400),
    "ties, n=8 (exact over sign patterns)": np.array([0.1, -0.1, 0.2, 0.2, 0.3, -0.05, 0.2,
                                                      0.4]),
    "zeros, n=11 (exact over sign patterns)": _data(4, 11, zeros=3),
    "ties and zeros, n=13": _data(5, 13, zeros=2, decimals=1),
    "ties and zeros, n=14 (normal, tie-corrected)": _data(6, 14, decimals=1),
    "ties, n=40 (normal, tie-corrected)": np.tile([0.1, -0.2, 0.3, 0.05, 0.1], 8),
    "zeros, n=30 (normal)": _data(7, 30, zeros=4),
    "ties and zeros, n=300": _data(8, 300, zeros=20, decimals=2),
    "all zeros, n=5": np.zeros(5),
    "all zeros, n=20": np.zeros(20),
    "all positive, n=12": np.abs(_data(9, 12)) + 0.01,
}


@pytest.mark.parametrize("name", list(WILCOXON_CASES))
def test_wilcoxon_is_scipys(name: str) -> None:
    d = WILCOXON_CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SciPy's 0/0 for all-zero differences
        expected = stats.wilcoxon(d).pvalue
    ours = wilcoxon_p(d)
    if math.isnan(expected):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(expected, rel=1e-12, abs=0), (ours, expected)


def test_wilcoxon_of_nothing_is_nan() -> None:
    assert math.isnan(wilcoxon_p([]))
