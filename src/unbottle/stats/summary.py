"""One summary per measurement: spread, tail percentiles and a CI of the median, all from raw samples.

Reports show a median with its confidence interval rather than a bare mean, so that two runs can be
told apart from noise at a glance; p90/p99 show the tail that a mean hides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from unbottle.stats.bootstrap import as_samples, bootstrap_ci


@dataclasses.dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one metric's samples, in the samples' own unit.

    Attributes:
        n: number of samples.
        mean: arithmetic mean.
        stdev: sample standard deviation (ddof=1); 0.0 for a single sample.
        min: smallest sample.
        max: largest sample.
        p50: median (linear-interpolated percentile, as ``numpy.percentile``).
        p90: 90th percentile.
        p99: 99th percentile.
        ci_low: lower bound of the bootstrap CI of the median.
        ci_high: upper bound of the bootstrap CI of the median.
        confidence: coverage of that CI, e.g. 0.95.
    """

    n: int
    mean: float
    stdev: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    ci_low: float
    ci_high: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def summarize(
    samples: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Summary:
    """Summarise raw samples: mean, stdev, min/max, p50/p90/p99 and a bootstrap CI of the median.

    Args:
        samples: raw measurements, all in one unit.
        confidence: coverage of the median's CI, strictly between 0 and 1.
        n_resamples: bootstrap resamples for the CI.
        seed: bootstrap seed; the summary is deterministic given it.

    Returns:
        A frozen ``Summary`` of plain Python numbers.

    Raises:
        ConfigError: on empty or non-finite samples or an invalid ``confidence``/``n_resamples``.

    Example:
        >>> summarize([0.021, 0.020, 0.024, 0.022]).p50
        0.0215
    """
    values = as_samples(samples)
    ci_low, ci_high = bootstrap_ci(values, np.median, confidence, n_resamples, seed)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return Summary(
        n=int(values.size),
        mean=float(values.mean()),
        stdev=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min=float(values.min()),
        max=float(values.max()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=float(confidence),
    )
