"""Checks of the percentile bootstrap: coverage on known distributions, the exact median shortcut, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unbottle.core.errors import ConfigError
from unbottle.stats import bootstrap_ci
from unbottle.stats.bootstrap import _median_replicates


def _coverage(draw, true_value: float, statistic=np.median, datasets: int = 300, n: int = 50) -> float:
    rng = np.random.default_rng(2024)
    hits = 0
    for i in range(datasets):
        low, high = bootstrap_ci(draw(rng, n), statistic, confidence=0.95, n_resamples=1000, seed=i)
        hits += low <= true_value <= high
    return hits / datasets


def _median_via_generic_path(matrix: np.ndarray, axis: int) -> np.ndarray:
    return np.median(matrix, axis=axis)  # not ``np.median`` itself, so the resampling path runs


def test_bootstrap_ci_covers_true_median_on_normal():
    coverage = _coverage(lambda rng, n: rng.normal(5.0, 2.0, n), true_value=5.0)
    assert 0.90 <= coverage <= 0.99, f"95% CI of the median covered N(5, 2)'s median {coverage:.3f}"


def test_bootstrap_ci_covers_true_median_on_lognormal():
    # Log-normal(0, 1) is skewed like latencies; its median is exp(0) = 1.
    coverage = _coverage(lambda rng, n: rng.lognormal(0.0, 1.0, n), true_value=1.0)
    assert 0.90 <= coverage <= 0.99, f"95% CI of the median covered LogN(0, 1)'s median {coverage:.3f}"


def test_bootstrap_ci_covers_true_mean_on_normal_with_generic_statistic():
    coverage = _coverage(lambda rng, n: rng.normal(5.0, 2.0, n), true_value=5.0, statistic=np.mean)
    assert 0.90 <= coverage <= 0.99, f"95% CI of the mean covered N(5, 2)'s mean {coverage:.3f} of the time"


def test_bootstrap_ci_width_shrinks_like_inverse_sqrt_n():
    rng = np.random.default_rng(7)

    def mean_width(n: int) -> float:
        intervals = [bootstrap_ci(rng.lognormal(size=n), seed=s) for s in range(20)]
        return float(np.mean([high - low for low, high in intervals]))

    small, large = mean_width(100), mean_width(1600)
    # 16x the samples should make the interval about sqrt(16) = 4x narrower.
    assert 2.5 < small / large < 6.0, f"width n=100: {small:.4f}, n=1600: {large:.4f}"


def test_bootstrap_ci_is_deterministic_given_seed():
    x = np.random.default_rng(0).lognormal(size=200)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, np.mean, seed=3) == bootstrap_ci(x, np.mean, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)


def test_bootstrap_ci_brackets_the_sample_median():
    x = np.random.default_rng(1).normal(size=101)
    low, high = bootstrap_ci(x, confidence=0.9)
    assert low < np.median(x) < high


def test_bootstrap_ci_widens_with_confidence():
    x = np.random.default_rng(2).lognormal(size=300)
    low80, high80 = bootstrap_ci(x, confidence=0.80)
    low99, high99 = bootstrap_ci(x, confidence=0.99)
    assert low99 < low80 and high80 < high99


def test_bootstrap_ci_returns_the_value_for_a_single_sample():
    assert bootstrap_ci([3.25]) == (3.25, 3.25)


def test_median_replicates_match_exact_bootstrap_distribution_for_odd_n():
    # Exact (Efron 1979): P(bootstrap median <= x_(j)) = P(Binomial(n, j/n) >= k), k = (n + 1) / 2.
    n, k, draws = 11, 6, 200_000
    sorted_values = np.arange(n, dtype=np.float64)
    replicates = _median_replicates(sorted_values, draws, np.random.default_rng(0))
    empirical = np.bincount(replicates.astype(np.int64), minlength=n) / draws

    def tail(p: float) -> float:
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    cdf = np.array([tail(j / n) for j in range(1, n + 1)])
    exact = np.diff(cdf, prepend=0.0)
    np.testing.assert_allclose(empirical, exact, atol=0.005, err_msg="median shortcut != exact bootstrap")


@pytest.mark.parametrize("n", [8, 9, 40])
def test_bootstrap_ci_median_shortcut_agrees_with_resampling(n: int):
    x = np.random.default_rng(n).lognormal(size=n)
    fast = bootstrap_ci(x, n_resamples=20_000, seed=5)
    slow = bootstrap_ci(x, _median_via_generic_path, n_resamples=20_000, seed=5)
    gap = float(np.max(np.diff(np.sort(x))))  # endpoints may land on neighbouring order statistics
    np.testing.assert_allclose(fast, slow, atol=gap, err_msg=f"n={n}: shortcut {fast}, resampling {slow}")


def test_bootstrap_ci_accepts_statistic_without_axis_argument():
    x = np.random.default_rng(3).normal(size=30)
    low, high = bootstrap_ci(x, lambda row: float(np.mean(row)), n_resamples=200)
    assert low < np.mean(x) < high


@pytest.mark.parametrize(
    ("samples", "kwargs", "match"),
    [
        ([], {}, "empty"),
        ([1.0, float("nan")], {}, "NaN"),
        ([[1.0, 2.0]], {}, "flat"),
        ([1.0, 2.0], {"confidence": 1.0}, "between 0 and 1"),
        ([1.0, 2.0], {"confidence": 0.0}, "between 0 and 1"),
        ([1.0, 2.0], {"n_resamples": 0}, "positive"),
    ],
)
def test_bootstrap_ci_raises_config_error_on_invalid_input(samples, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        bootstrap_ci(samples, **kwargs)
