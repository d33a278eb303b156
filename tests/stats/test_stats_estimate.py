"""Checks of Estimate: interval membership, validation, JSON round-trip, and the ratio-to-percent map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unbottle.core.errors import ConfigError
from unbottle.stats import Estimate, hull, percent_change


def _estimate(point: float = 1.2, low: float = 1.1, high: float = 1.3) -> Estimate:
    return Estimate(point=point, ci_low=low, ci_high=high, confidence=0.95, n=30, method="test")


def test_estimate_contains_is_closed_interval():
    est = _estimate()
    assert est.contains(1.1) and est.contains(1.3) and est.contains(1.2)
    assert not est.contains(1.0999) and not est.contains(1.3001)


def test_estimate_round_trips_through_json():
    est = Estimate(
        point=np.float64(0.5), ci_low=0.25, ci_high=0.75, confidence=0.9, n=np.int64(12), method="m"
    )
    again = Estimate.from_dict(json.loads(json.dumps(est.to_dict())))
    assert again == est
    assert type(again.point) is float and type(again.n) is int


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ci_low": 2.0, "ci_high": 1.0}, "reversed"),
        ({"confidence": 1.0}, "strictly between 0 and 1"),
        ({"point": float("nan")}, "finite"),
        ({"n": 0}, "positive integer"),
        ({"n": 2.5}, "positive integer"),
    ],
)
def test_estimate_rejects_invalid_fields(fields, message):
    base = {"point": 1.0, "ci_low": 0.5, "ci_high": 1.5, "confidence": 0.95, "n": 3, "method": "m"}
    with pytest.raises(ConfigError, match=message):
        Estimate(**{**base, **fields})


def test_estimate_from_dict_rejects_unknown_and_missing_keys():
    data = _estimate().to_dict()
    with pytest.raises(ConfigError, match="unknown: \\['extra'\\]"):
        Estimate.from_dict({**data, "extra": 1})
    data.pop("n")
    with pytest.raises(ConfigError, match="missing: \\['n'\\]"):
        Estimate.from_dict(data)


def test_percent_change_maps_ratio_bounds_to_percent():
    pct = percent_change(_estimate(1.25, 0.9, 1.5))
    assert (pct.point, pct.ci_low, pct.ci_high) == pytest.approx((25.0, -10.0, 50.0))
    assert pct.confidence == 0.95 and pct.n == 30 and "test" in pct.method


def test_hull_holds_the_pooled_and_every_part_interval_and_keeps_the_point():
    pooled = Estimate(1.20, 1.15, 1.25, 0.95, 10, "ratio")
    parts = [Estimate(1.10, 1.05, 1.16, 0.95, 5, "ratio"), Estimate(1.30, 1.24, 1.33, 0.95, 5, "ratio")]
    wide = hull(pooled, parts, "time blocks")
    assert (wide.point, wide.ci_low, wide.ci_high, wide.n) == (1.20, 1.05, 1.33, 10)
    assert "2 time blocks" in wide.method
    assert hull(pooled, [], "time blocks") == pooled
