"""Gain factors, the guard on point or CI bound, and the Pareto front."""

from __future__ import annotations

import pytest

from unbottle.optimizer.judge import accuracy_change, gain, guard, pareto_front
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


def test_phases_name_the_one_that_got_slower_beyond_doubt():
    from unbottle.optimizer.judge import phase_line, phases

    cmps = {
        "decode.ttft": _cmp("decode.ttft", 80.0, False, 60.0, 100.0),  # time to first token ×1/1.8: slower
        "decode.tokens_per_s": _cmp("decode.tokens_per_s", 200.0, True, 180.0, 220.0),
        "decode.request_latency": _cmp("decode.request_latency", -2.0, False, -8.0, 4.0),  # not sure
    }
    rows = phases(cmps)
    assert [(r["phase"], r["regressed"]) for r in rows] == [
        ("prefill", True),
        ("decode", False),
        ("request", False),
    ]
    line = phase_line(rows, 512, 128)
    assert line.startswith("request prompt=512,new=128: prefill ×0.56 [0.50, 0.62] REGRESSED")
    assert line.count("REGRESSED") == 1
    assert phases({}) == []


def test_the_verdict_warns_of_a_slower_phase_even_when_the_guard_passed():
    from types import SimpleNamespace

    from unbottle.optimizer.config import OptimizeConfig
    from unbottle.optimizer.judge import phases
    from unbottle.optimizer.result import _verdict

    cfg = OptimizeConfig(model="tiny-llama", prompt_length=2048, new_tokens=16)
    cmps = {
        "decode.ttft": _cmp("decode.ttft", 80.0, False, 60.0, 100.0),
        "decode.tokens_per_s": _cmp("decode.tokens_per_s", 200.0, True, 180.0, 220.0),
    }
    winner = {"cand": SimpleNamespace(key="genai:weights=gguf"), "gain": (3.0, 2.8, 3.2)}
    verification = {"overall": "pass", "goals": [{"explanation": "perplexity +0.1% ≤ 1%"}]}
    text = _verdict(cfg, winner, verification, phases(cmps), None)
    assert "guard met" in text and "prompt=2048,new=16" in text
    assert text.endswith("WARNING: slower than the baseline in prefill (time to first token)")
    quiet = _verdict(
        cfg, winner, verification, phases({"decode.tokens_per_s": cmps["decode.tokens_per_s"]}), None
    )
    assert "WARNING" not in quiet and "NOT significantly" not in quiet
    unsure = {**winner, "gain": (1.06, 0.94, 1.18)}  # verified, but not told apart from the baseline
    text = _verdict(cfg, unsure, verification, [], None)
    assert "×1.06 [0.94, 1.18] (95% CI, verified); NOT significantly better than the baseline" in text
