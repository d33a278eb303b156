"""Speed comparisons: per-metric ratio B/A with a bootstrap CI, from paired rounds or stored runs.

Paired rounds (interleaved A/B) use the paired ratio of medians: drift shared by a round cancels.
Two stored runs measured at different times can't be paired; their samples are resampled
independently, which gives wider, honest intervals. Rounds measured in blocks separated in time
(``blocks``: the rounds per block) get the pooled interval widened to hold each block's own interval,
so a shift between the blocks shows in the interval instead of being averaged away.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

import numpy as np

from unbottle.comparison.ab import AB_METRICS, ABRounds
from unbottle.stats import (
    Estimate,
    MetricComparison,
    bootstrap_ci,
    hull,
    median_difference_paired,
    median_difference_unpaired,
    percent_change,
    ratio_of_medians_paired,
    ratio_of_medians_unpaired,
    verdict_of,
)

# The fewest paired rounds at which the ratio-of-medians interval was checked to cover (93.6% at 5,
# 96.1% at 10, but 73.7% at 3; benchmarks/coverage.py): below it the interval is marked indicative.
MIN_ROUNDS = 5
INDICATIVE = "indicative only"


def _median_estimate(values: list[float]) -> Estimate:
    lo, hi = bootstrap_ci(values)
    return Estimate(float(np.median(values)), lo, hi, 0.95, len(values), "bootstrap median")


def compare_samples(
    metric: str,
    unit: str,
    higher_is_better: bool,
    a: list[float],
    b: list[float],
    paired: bool,
    noise_floor_pct: float | None = None,
    blocks: Sequence[int] | None = None,
) -> MetricComparison:
    """B against A on one speed metric.

    Args:
        paired: True for per-round values of an interleaved A/B (round i of each ran back to back);
            False for samples taken at different times (two stored runs).
        blocks: rounds per time block, in order (paired only), when the rounds ran in blocks.
    """
    ratio, diff = (
        (ratio_of_medians_paired, median_difference_paired)
        if paired
        else (ratio_of_medians_unpaired, median_difference_unpaired)
    )
    ratio_est, diff_est = ratio(a, b), diff(a, b)
    if paired and blocks is not None and len(blocks) > 1:
        parts = _split(a, b, blocks)
        ratio_est = hull(ratio_est, [ratio(x, y) for x, y in parts], "time blocks")
        diff_est = hull(diff_est, [diff(x, y) for x, y in parts], "time blocks")
    pct = percent_change(ratio_est)
    if paired and len(a) < MIN_ROUNDS:
        pct = dataclasses.replace(
            pct,
            method=f"{pct.method}; {INDICATIVE}: {len(a)} rounds, below the {MIN_ROUNDS} at which this "
            "interval was checked to cover 95%",
        )
    return MetricComparison(
        metric=metric,
        unit=unit,
        higher_is_better=higher_is_better,
        a=_median_estimate(a),
        b=_median_estimate(b),
        diff=diff_est,
        pct=pct,
        verdict=verdict_of(pct, higher_is_better, noise_floor_pct),
        noise_floor_pct=noise_floor_pct,
    )


def _split(a: list[float], b: list[float], blocks: Sequence[int]) -> list[tuple[list[float], list[float]]]:
    if sum(blocks) != len(a) or min(blocks) < 1:
        raise ValueError(f"blocks {list(blocks)} do not divide {len(a)} rounds into non-empty parts")
    ends = np.cumsum(blocks)
    return [(a[e - n : e], b[e - n : e]) for n, e in zip(blocks, ends, strict=True)]


def compare_rounds(rounds, noise_floor: dict[str, float] | None = None) -> dict[str, MetricComparison]:
    """Every metric of an interleaved A/B (``unbottle.comparison.ab.ABRounds``), paired by round
    (and widened to each time block's own interval when the rounds ran in blocks). A metric that is
    zero in some round (a serve's goodput when no request met the objectives) has no ratio: it is
    left out here and listed by ``not_compared``."""
    out, zero = {}, not_compared(rounds)
    for name, a_values in rounds.a.items():
        if name in zero:
            continue
        unit, higher = AB_METRICS[rounds.config.scenario][name.split(".", 1)[1]]
        floor = (noise_floor or {}).get(name)
        out[name] = compare_samples(name, unit, higher, a_values, rounds.b[name], True, floor, rounds.blocks)
    return out


def not_compared(rounds: ABRounds) -> dict[str, dict[str, float]]:
    """Metrics of an A/B with a zero (or negative) round on either side, which no ratio describes:
    ``{name: {"a": median of A, "b": median of B}}``."""
    out = {}
    for name, a_values in rounds.a.items():
        b_values = rounds.b[name]
        if min(a_values) <= 0 or min(b_values) <= 0:
            out[name] = {"a": float(statistics.median(a_values)), "b": float(statistics.median(b_values))}
    return out
