"""A number with its confidence interval: the unit in which comparisons and goals speak.

A point estimate alone cannot say whether a change is real; every comparison statistic therefore
returns an ``Estimate`` that carries its interval, its coverage, how many samples it rests on and how
it was computed, and round-trips through JSON so the store keeps all of it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from unbottle.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval.

    Attributes:
        point: the statistic on the original data.
        ci_low: lower bound of the confidence interval.
        ci_high: upper bound of the confidence interval.
        confidence: two-sided coverage of the interval, e.g. 0.95.
        n: samples the estimate rests on (pairs for paired statistics, both sides' samples together
            for unpaired ones).
        method: how it was computed, in words (statistic, resampling scheme, resamples, seed).
    """

    point: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    method: str

    def __post_init__(self) -> None:
        for name in ("point", "ci_low", "ci_high", "confidence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ConfigError(f"Estimate.{name} must be a finite number; got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"Estimate.confidence must lie strictly between 0 and 1; got {self.confidence}")
        if self.ci_low > self.ci_high:
            raise ConfigError(f"Estimate interval is reversed: ci_low {self.ci_low} > ci_high {self.ci_high}")
        if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 1:
            raise ConfigError(f"Estimate.n must be a positive integer (samples used); got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies inside the closed interval ``[ci_low, ci_high]``."""
        return self.ci_low <= x <= self.ci_high

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Rebuild an estimate from ``to_dict`` output; unknown or missing keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        if set(data) != known:
            raise ConfigError(
                f"Estimate fields {sorted(data)} given; expected exactly {sorted(known)} "
                f"(unknown: {sorted(set(data) - known)}, missing: {sorted(known - set(data))})"
            )
        return cls(**data)


def percent_change(ratio: Estimate) -> Estimate:
    """Turn an estimate of a ratio B/A into the relative change ``100 * (B/A - 1)`` in percent.

    The map is increasing, so a percentile-bootstrap interval of the ratio maps bound to bound onto
    the interval of the change.

    Example:
        >>> percent_change(Estimate(1.25, 1.1, 1.5, 0.95, 30, "ratio")).point
        25.0
    """
    return Estimate(
        point=100.0 * (ratio.point - 1.0),
        ci_low=100.0 * (ratio.ci_low - 1.0),
        ci_high=100.0 * (ratio.ci_high - 1.0),
        confidence=ratio.confidence,
        n=ratio.n,
        method=f"100 * (ratio - 1) of {ratio.method}",
    )


def hull(pooled: Estimate, parts: list[Estimate], what: str) -> Estimate:
    """``pooled`` with its interval widened to hold every one of ``parts``' intervals.

    For measurements taken in blocks separated in time (``what`` names them, e.g. "time blocks"): an
    interval from the pooled samples alone treats every sample as exchangeable and misses a change
    between the blocks (another tenant, a frequency step); the hull keeps that spread in the interval.
    """
    if not parts:
        return pooled
    return dataclasses.replace(
        pooled,
        ci_low=min(pooled.ci_low, *(p.ci_low for p in parts)),
        ci_high=max(pooled.ci_high, *(p.ci_high for p in parts)),
        method=f"{pooled.method}; widened to hold each of the {len(parts)} {what}' own intervals",
    )
