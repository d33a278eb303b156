"""Gain factors, the guard on point or CI bound, and the Pareto front."""

from __future__ import annotations

import pytest

from unbottle.optimize.judge import accuracy_change, gain, guard, pareto_front
from unbottle.stats import Estimate, Goal, MetricComparison


def _cmp(metric, pct, higher, lo=None, hi=None):
    e = Estimate(pct, pct if lo is None else lo, pct if hi is None else hi, 0.95, 8, "test")
    one = Estimate(1.0, 1.0, 1.0, 0.95, 8, "test")
    return MetricComparison(metric, "u", higher, one, one, e, e, "better").to_dict()


def test_gain_is_above_one_when_better_whatever_the_direction():
    assert gain(_cmp("decode.tokens_per_s", 100.0, True, 90.0, 110.0)) == pytest.approx((2.0, 1.9, 2.1))
    latency = gain(_cmp("prefill.latency", -50.0, False, -60.0, -40.0))
    assert latency == pytest.approx((2.0, 1 / 0.6, 2.5))
    assert latency[1] < latency[0] < latency[2]
    assert gain(None) is None


def test_guard_on_point_passes_where_the_ci_bound_fails():
    goals = [Goal.parse("perplexity:percent-max-degradation=1")]
    cmps = {"perplexity": _cmp("perplexity", 0.8, False, 0.5, 1.1)}
    assert guard(goals, cmps, on_point=True)["passed"]
    ci = guard(goals, cmps, on_point=False)
    assert not ci["passed"]
    assert "1.1" in ci["results"][0]["explanation"]


def test_guard_fails_when_the_metric_was_not_measured():
    goals = [Goal.parse("accuracy:max-degradation=1")]
    assert guard(goals, {}, on_point=True) == {"passed": False, "results": [], "missing": "accuracy"}


def test_accuracy_change_prefers_perplexity_percent():
    cmps = {"perplexity": _cmp("perplexity", 0.5, False)}
    assert accuracy_change(cmps)["metric"] == "perplexity"
    assert accuracy_change({}) is None


def test_pareto_front_keeps_every_trade_off_and_drops_the_dominated():
    points = [
        {"key": "baseline", "gain": 1.0, "loss": 0.0, "weights_mib": 500},
        {"key": "fast", "gain": 4.0, "loss": 0.5, "weights_mib": 150},
        {"key": "small", "gain": 3.0, "loss": 0.9, "weights_mib": 90},
        {"key": "worse", "gain": 2.0, "loss": 0.6, "weights_mib": 160},
        {"key": "exact", "gain": 1.1, "loss": 0.0, "weights_mib": 500},
    ]
    assert pareto_front(points) == ["fast", "small", "exact"]
