"""Accuracy comparisons paired by sample: the same windows and items, scored by both models.

Perplexity changes are pooled over tokens (relative change of exp(mean NLL)); accuracy changes are
in points (percentage points); agreement metrics compare means. Every CI is a paired bootstrap over
the samples, which is far tighter than comparing two independent headline numbers.
"""

from __future__ import annotations

import numpy as np

from unbottle.core.errors import EvalError
from unbottle.evaluation import EvalResult
from unbottle.stats import (
    Estimate,
    MetricComparison,
    mean_difference_paired,
    paired_bootstrap,
    relative_change_pooled,
    verdict_of,
)

PERPLEXITIES = ("perplexity", "pseudo_perplexity")  # exp of a token-pooled mean NLL


def _paired_arrays(a: EvalResult, b: EvalResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if a.sample_ids != b.sample_ids:
        raise EvalError(
            f"{a.metric}: the two results were computed on different samples ({len(a.sample_ids)} vs "
            f"{len(b.sample_ids)}); compare evaluations made with the same text, task and settings"
        )
    weights = np.asarray(a.weights or [1.0] * len(a.scores), dtype=float)
    return np.asarray(a.scores, dtype=float), np.asarray(b.scores, dtype=float), weights


def pooled_value(scores: np.ndarray, weights: np.ndarray, metric: str) -> Estimate:
    """A result's headline value (weighted mean of scores; exp of it for perplexity) with a bootstrap CI."""

    def stat(s, w):
        mean = (s * w).sum(axis=1) / w.sum(axis=1)
        return np.exp(mean) if metric in PERPLEXITIES else mean

    return paired_bootstrap(scores, weights, stat, method=f"bootstrap {metric}")


def compare_eval(a: EvalResult, b: EvalResult) -> MetricComparison:
    """B against A on one evaluation metric, paired by sample."""
    sa, sb, w = _paired_arrays(a, b)
    if a.metric in PERPLEXITIES:
        pct = relative_change_pooled(sa, sb, w)

        def ppl_diff(idx, _):  # rows of resampled window indices
            i = idx.astype(int)
            ww = w[i]
            return np.exp((sb[i] * ww).sum(axis=1) / ww.sum(axis=1)) - np.exp(
                (sa[i] * ww).sum(axis=1) / ww.sum(axis=1)
            )

        index = np.arange(w.size, dtype=float)
        diff = paired_bootstrap(index, index, ppl_diff, method=f"bootstrap {a.metric} difference")
        unit, a_est, b_est = "ppl", pooled_value(sa, w, a.metric), pooled_value(sb, w, a.metric)
    else:
        scale = 100.0 if a.metric == "accuracy" else 1.0
        diff = mean_difference_paired(sa, sb, scale=scale)
        unit = "points" if a.metric == "accuracy" else a.score_unit
        a_est, b_est = (
            _scaled(pooled_value(sa, w, a.metric), scale),
            _scaled(pooled_value(sb, w, b.metric), scale),
        )
        base = a_est.point if a_est.point != 0 else 1.0
        pct = Estimate(
            100 * diff.point / base,
            100 * diff.ci_low / base,
            100 * diff.ci_high / base,
            diff.confidence,
            diff.n,
            "relative to A's value",
        )
    return MetricComparison(
        metric=a.metric,
        unit=unit,
        higher_is_better=a.higher_is_better,
        a=a_est,
        b=b_est,
        diff=diff,
        pct=pct,
        verdict=verdict_of(pct, a.higher_is_better),
    )


def _scaled(e: Estimate, scale: float) -> Estimate:
    return Estimate(e.point * scale, e.ci_low * scale, e.ci_high * scale, e.confidence, e.n, e.method)


def compare_evals(a: list[EvalResult], b: list[EvalResult]) -> dict[str, MetricComparison]:
    """Pair two lists of results by metric and compare each; metrics on one side only are skipped."""
    by_b = {r.metric: r for r in b}
    return {r.metric: compare_eval(r, by_b[r.metric]) for r in a if r.metric in by_b}
