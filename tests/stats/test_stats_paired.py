"""Checks of the paired and unpaired comparison estimators: coverage of known truths, exact points, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unbottle.comparison.speed import compare_samples
from unbottle.core.errors import ConfigError
from unbottle.stats import (
    mean_difference_paired,
    median_difference_paired,
    median_difference_unpaired,
    median_of_ratios,
    paired_bootstrap,
    ratio_of_medians_paired,
    ratio_of_medians_unpaired,
    relative_change_pooled,
)
from unbottle.stats import paired as paired_module

SIMULATIONS = 300
RESAMPLES = 500


def _interleaved_rounds(
    rng: np.random.Generator, n: int, ratio: float, drift: float = 0.1, noise: float = 0.1
):
    # Round i of A and of B ran back to back: they share the drift d_i and differ by independent noise.
    # log A ~ N(0, drift^2 + noise^2), so median(A) = 1 and median(B) = median(B_i / A_i) = ratio.
    shared = rng.normal(0.0, drift, n)
    a = np.exp(shared + rng.normal(0.0, noise, n))
    b = ratio * np.exp(shared + rng.normal(0.0, noise, n))
    return a, b


def _coverage(estimator, simulate, truth: float, data_seed: int) -> float:
    rng = np.random.default_rng(data_seed)
    hits = 0
    for i in range(SIMULATIONS):
        hits += estimator(*simulate(rng), n_resamples=RESAMPLES, seed=i).contains(truth)
    return hits / SIMULATIONS


@pytest.mark.parametrize("estimator", [ratio_of_medians_paired, median_of_ratios])
@pytest.mark.parametrize("ratio", [1.0, 1.2])
def test_paired_ratio_estimators_cover_true_ratio_on_interleaved_lognormal_rounds(estimator, ratio):
    coverage = _coverage(estimator, lambda rng: _interleaved_rounds(rng, 40, ratio), ratio, int(ratio * 10))
    assert 0.90 <= coverage <= 0.99, f"{estimator.__name__} 95% CI covered ratio {ratio} {coverage:.3f}"


def test_ratio_of_medians_unpaired_covers_true_ratio_on_independent_runs_of_unequal_length():
    def two_runs(rng):
        return rng.lognormal(0.0, 0.3, 40), 1.2 * rng.lognormal(0.0, 0.3, 60)

    coverage = _coverage(ratio_of_medians_unpaired, two_runs, 1.2, data_seed=3)
    assert 0.90 <= coverage <= 0.99, f"unpaired 95% CI covered ratio 1.2 {coverage:.3f} of the time"


def test_mean_difference_paired_covers_true_accuracy_change_in_points():
    # 200 items of varying difficulty p_i <= 0.9; B answers right whenever A does, and 5% more often:
    # the true accuracy change is exactly +5 points.
    def items(rng):
        p, u = rng.uniform(0.2, 0.9, 200), rng.uniform(size=200)
        return (u < p).astype(float), (u < p + 0.05).astype(float)

    def points(a, b, **kwargs):
        return mean_difference_paired(a, b, scale=100.0, **kwargs)

    coverage = _coverage(points, items, 5.0, data_seed=1)
    assert 0.90 <= coverage <= 0.99, f"95% CI of the accuracy change covered +5 points {coverage:.3f}"


def test_relative_change_pooled_covers_true_perplexity_change():
    # Window NLLs vary a lot between windows, B adds 0.01 nats/token on average: perplexity +1.005%.
    truth = 100.0 * math.expm1(0.01)

    def windows(rng):
        tokens = rng.integers(64, 512, 60).astype(float)
        a = rng.normal(3.0, 0.4, 60)
        b = a + rng.normal(0.01, 0.03, 60) / np.sqrt(tokens / 256)
        return a, b, tokens

    coverage = _coverage(relative_change_pooled, windows, truth, data_seed=2)
    assert 0.90 <= coverage <= 0.99, f"95% CI of the perplexity change covered {truth:.3f}% {coverage:.3f}"


def test_relative_change_pooled_point_equals_direct_perplexity_ratio():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 512, 50).astype(float)
    a, b = rng.normal(3.0, 0.5, 50), rng.normal(3.05, 0.5, 50)
    ppl_a = math.exp(np.sum(tokens * a) / np.sum(tokens))
    ppl_b = math.exp(np.sum(tokens * b) / np.sum(tokens))
    est = relative_change_pooled(a, b, tokens)
    assert est.point == pytest.approx(100.0 * (ppl_b / ppl_a - 1.0), rel=1e-12)
    assert est.ci_low < est.point < est.ci_high and est.n == 50


def test_paired_ratio_of_medians_is_narrower_than_unpaired_when_rounds_share_drift():
    rng = np.random.default_rng(5)
    widths = {"paired": [], "unpaired": []}
    for seed in range(20):
        a, b = _interleaved_rounds(rng, 40, 1.2, drift=0.3, noise=0.05)
        for name, estimator in (("paired", ratio_of_medians_paired), ("unpaired", ratio_of_medians_unpaired)):
            est = estimator(a, b, seed=seed)
            widths[name].append(est.ci_high - est.ci_low)
    paired, unpaired = np.mean(widths["paired"]), np.mean(widths["unpaired"])
    assert paired < 0.6 * unpaired, f"mean CI width paired {paired:.4f} vs unpaired {unpaired:.4f}"


def test_median_difference_estimators_report_b_minus_a_in_sample_units():
    rng = np.random.default_rng(4)
    a, b = _interleaved_rounds(rng, 41, 1.2)
    for estimator in (median_difference_paired, median_difference_unpaired):
        est = estimator(a * 10.0, b * 10.0)  # e.g. milliseconds
        assert est.point == pytest.approx(10.0 * (np.median(b) - np.median(a)))
        assert est.ci_low <= est.point <= est.ci_high


def test_paired_statistics_share_resamples_given_seed():
    a, b = np.arange(1.0, 31.0), np.arange(2.0, 32.0)
    seen = []

    def first_index(a_rows, b_rows):
        seen.append(a_rows.copy())
        np.testing.assert_array_equal(b_rows - a_rows, 1.0, err_msg="a and b rows are not the same pairs")
        return a_rows[:, 0]

    paired_bootstrap(a, b, first_index, seed=7)
    paired_bootstrap(a, b, first_index, seed=7)
    np.testing.assert_array_equal(seen[1], seen[3], err_msg="equal seeds drew different resamples")


def test_paired_bootstrap_is_deterministic_given_seed():
    a, b = _interleaved_rounds(np.random.default_rng(0), 40, 1.1)
    assert ratio_of_medians_paired(a, b, seed=3) == ratio_of_medians_paired(a, b, seed=3)
    assert ratio_of_medians_paired(a, b, seed=3) != ratio_of_medians_paired(a, b, seed=4)
    assert ratio_of_medians_unpaired(a, b, seed=3) == ratio_of_medians_unpaired(a, b, seed=3)


def test_paired_bootstrap_result_does_not_depend_on_chunk_size(monkeypatch):
    a, b = _interleaved_rounds(np.random.default_rng(1), 40, 1.1)
    whole = ratio_of_medians_paired(a, b, n_resamples=300)
    monkeypatch.setattr(paired_module, "_CHUNK_ELEMENTS", 100)  # 2 rows of 40 per chunk
    assert ratio_of_medians_paired(a, b, n_resamples=300) == whole


def test_paired_bootstrap_point_is_statistic_on_original_pairs():
    a, b = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 8.0])
    est = paired_bootstrap(a, b, lambda x, y: (y - x).max(axis=1), n_resamples=200)
    assert est.point == 4.0 and est.n == 3 and "paired percentile bootstrap" in est.method


def test_estimators_return_degenerate_interval_for_a_single_pair():
    est = ratio_of_medians_paired([2.0], [3.0])
    assert (est.point, est.ci_low, est.ci_high) == (1.5, 1.5, 1.5)
    assert median_of_ratios([2.0], [3.0]).ci_high == 1.5


def test_mean_difference_paired_of_identical_answers_is_exactly_zero():
    correct = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    est = mean_difference_paired(correct, correct, scale=100.0)
    assert (est.point, est.ci_low, est.ci_high) == (0.0, 0.0, 0.0)
    assert mean_difference_paired(correct, 1 - correct, scale=100.0).point == pytest.approx(-20.0)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "equal lengths.*a has 3, b has 2"),
        ([], [], "a is empty"),
        ([1.0, float("nan")], [1.0, 2.0], "a holds 1 NaN or infinite"),
        ([1.0, 2.0], [1.0, float("inf")], "b holds 1 NaN or infinite"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "flat sequence"),
    ],
)
def test_paired_bootstrap_rejects_bad_input(a, b, message):
    with pytest.raises(ConfigError, match=message):
        paired_bootstrap(a, b, lambda x, y: y.mean(axis=1) - x.mean(axis=1))


def test_ratio_estimators_reject_non_positive_values():
    for estimator in (ratio_of_medians_paired, median_of_ratios, ratio_of_medians_unpaired):
        with pytest.raises(ConfigError, match="zero or negative.*positive values"):
            estimator([1.0, 0.0, 2.0], [1.0, 1.0, 1.0])


def test_relative_change_pooled_rejects_bad_weights():
    with pytest.raises(ConfigError, match="weights holds 1 zero or negative"):
        relative_change_pooled([3.0, 3.1], [3.0, 3.2], [128.0, 0.0])
    with pytest.raises(ConfigError, match="weights has 1"):
        relative_change_pooled([3.0, 3.1], [3.0, 3.2], [128.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"confidence": 1.0}, "strictly between 0 and 1"), ({"n_resamples": 0}, "positive integer")],
)
def test_paired_bootstrap_rejects_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ratio_of_medians_paired([1.0, 2.0], [1.0, 2.0], **kwargs)


def test_paired_bootstrap_rejects_statistic_of_wrong_shape_or_non_finite_values():
    with pytest.raises(ConfigError, match="one number per resample row"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], lambda x, y: y - x)
    with pytest.raises(ConfigError, match="NaN or infinite"):
        paired_bootstrap([0.0, 1.0], [1.0, 2.0], lambda x, y: np.full(x.shape[0], np.nan))


def _windows_t4(rng: np.random.Generator, n: int):
    # window NLL differences with heavier tails than normal (Student t, 4 degrees of freedom)
    a = rng.normal(3.5, 0.4, n)
    return a, a + 0.005 + 0.01 * rng.standard_t(4, n), np.full(n, 511.0)


@pytest.mark.parametrize("n", [8, 32])  # 8: a 4096-token verification; 32: unbottle eval's default
def test_the_perplexity_interval_covers_at_the_window_counts_the_defaults_use(n):
    truth, rng = 100.0 * math.expm1(0.005), np.random.default_rng(n)
    hits = sum(relative_change_pooled(*_windows_t4(rng, n)).contains(truth) for _ in range(2000))
    assert 0.93 <= hits / 2000 <= 0.975, f"{n} windows: covered {hits / 2000:.3f}"


@pytest.mark.parametrize("n", [5, 10])  # the verification's smallest planned rounds, and its default
def test_the_paired_speed_ratio_covers_from_five_rounds(n):
    rng = np.random.default_rng(n)
    hits = sum(
        ratio_of_medians_paired(*_interleaved_rounds(rng, n, 1.2), n_resamples=RESAMPLES, seed=i).contains(
            1.2
        )
        for i in range(600)
    )
    assert hits / 600 >= 0.93, f"{n} rounds: covered {hits / 600:.3f}"


def test_an_interval_from_fewer_rounds_than_it_was_checked_at_is_marked_indicative():
    few = compare_samples("decode.tokens_per_s", "tokens/s", True, [1.0, 1.1, 0.9], [2.0, 2.1, 1.9], True)
    enough = compare_samples("decode.tokens_per_s", "tokens/s", True, [1.0] * 5, [2.0] * 5, True)
    assert "indicative only: 3 rounds" in few.pct.method and "indicative" not in enough.pct.method
