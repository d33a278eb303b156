"""Checks of goals and verdicts: decided on CI bounds in the metric's direction, parsed and serialised."""

from __future__ import annotations

import json

import pytest

from unbottle.core.errors import ConfigError
from unbottle.stats import GOAL_KINDS, Estimate, Goal, MetricComparison, check_goal, check_goals, verdict_of

# name, unit and direction of the two kinds of metric every goal is checked on
SPEED = ("decode.tokens_per_s", "tokens/s", True)
PERPLEXITY = ("perplexity", "", False)


def _est(point: float, low: float, high: float) -> Estimate:
    return Estimate(point=point, ci_low=low, ci_high=high, confidence=0.95, n=30, method="constructed")


def _comparison(metric=SPEED, diff=(0.0, -1.0, 1.0), pct=(0.0, -1.0, 1.0), b=(100.0, 99.0, 101.0)):
    name, unit, higher_is_better = metric
    pct_est = _est(*pct)
    return MetricComparison(
        metric=name,
        unit=unit,
        higher_is_better=higher_is_better,
        a=_est(100.0, 99.0, 101.0),
        b=_est(*b),
        diff=_est(*diff),
        pct=pct_est,
        verdict=verdict_of(pct_est, higher_is_better),
    )


@pytest.mark.parametrize(
    ("pct", "higher_is_better", "noise_floor_pct", "expected"),
    [
        ((3.0, 1.0, 5.0), True, None, "better"),
        ((3.0, 1.0, 5.0), False, None, "worse"),
        ((-3.0, -5.0, -1.0), True, None, "worse"),
        ((-3.0, -5.0, -1.0), False, None, "better"),
        ((1.0, -1.0, 3.0), True, None, "no significant difference"),
        ((1.0, -1.0, 3.0), False, None, "no significant difference"),
        ((1.0, 0.0, 2.0), True, None, "no significant difference"),  # a bound exactly at 0
        ((0.5, 0.2, 0.8), True, 1.0, "noise"),
        ((-0.5, -0.8, -0.2), False, 1.0, "noise"),
        ((0.5, 0.2, 0.8), True, 0.5, "better"),  # the CI reaches past the floor
        ((-0.5, -0.8, -0.2), False, 0.5, "better"),
        ((1.0, -1.0, 3.0), True, 5.0, "no significant difference"),  # containing 0 comes first
    ],
)
def test_verdict_of_classifies_ci_by_direction_and_noise_floor(
    pct, higher_is_better, noise_floor_pct, expected
):
    assert verdict_of(_est(*pct), higher_is_better, noise_floor_pct) == expected


def test_verdict_of_rejects_negative_noise_floor():
    with pytest.raises(ConfigError, match="noise_floor_pct -1"):
        verdict_of(_est(1.0, 0.5, 1.5), True, -1.0)


# (metric, kind, value, estimate read by the goal: diff, pct or b, passed, CI bound that decided it).
# Every failing case has a point estimate that would pass: only the CI bound makes it fail.
GOAL_CASES = [
    (SPEED, "max-degradation", 2.0, (-1.0, -1.5, -0.5), True, -1.5),
    (SPEED, "max-degradation", 2.0, (-1.0, -3.0, 1.0), False, -3.0),
    (SPEED, "percent-max-degradation", 1.0, (-0.5, -0.8, -0.2), True, -0.8),
    (SPEED, "percent-max-degradation", 1.0, (-0.5, -1.3, 0.3), False, -1.3),
    (SPEED, "min-improvement", 5.0, (8.0, 6.0, 10.0), True, 6.0),
    (SPEED, "min-improvement", 5.0, (8.0, 3.0, 13.0), False, 3.0),
    (SPEED, "percent-min-improvement", 10.0, (15.0, 11.0, 19.0), True, 11.0),
    (SPEED, "percent-min-improvement", 10.0, (15.0, 8.0, 22.0), False, 8.0),
    (SPEED, "threshold", 100.0, (110.0, 104.0, 116.0), True, 104.0),
    (SPEED, "threshold", 100.0, (110.0, 96.0, 124.0), False, 96.0),
    (PERPLEXITY, "max-degradation", 0.5, (0.2, 0.1, 0.4), True, 0.4),
    (PERPLEXITY, "max-degradation", 0.5, (0.2, -0.2, 0.7), False, 0.7),
    (PERPLEXITY, "percent-max-degradation", 1.0, (0.5, 0.2, 0.8), True, 0.8),
    (PERPLEXITY, "percent-max-degradation", 1.0, (0.5, -0.4, 1.3), False, 1.3),
    (PERPLEXITY, "min-improvement", 0.5, (-1.0, -1.4, -0.6), True, -0.6),
    (PERPLEXITY, "min-improvement", 0.5, (-1.0, -1.8, -0.2), False, -0.2),
    (PERPLEXITY, "percent-min-improvement", 2.0, (-5.0, -7.0, -3.0), True, -3.0),
    (PERPLEXITY, "percent-min-improvement", 2.0, (-5.0, -9.0, -1.0), False, -1.0),
    (PERPLEXITY, "threshold", 20.0, (18.0, 17.0, 19.0), True, 19.0),
    (PERPLEXITY, "threshold", 20.0, (18.0, 16.0, 21.0), False, 21.0),
]


@pytest.mark.parametrize(("metric", "kind", "value", "estimate", "passed", "bound"), GOAL_CASES)
def test_check_goal_decides_every_kind_on_the_unfavourable_ci_bound(
    metric, kind, value, estimate, passed, bound
):
    field = "b" if kind == "threshold" else "pct" if kind.startswith("percent-") else "diff"
    cmp = _comparison(metric, **{field: estimate})
    result = check_goal(Goal(metric[0], kind, value), cmp)
    assert (result.passed, result.bound) == (passed, bound), result.explanation
    assert ("allowed" if "degradation" in kind else "required") in result.explanation


def test_goal_cases_cover_every_kind_passing_and_failing_in_both_directions():
    covered = {(metric[2], kind, passed) for metric, kind, _, _, passed, _ in GOAL_CASES}
    assert covered == {(hib, kind, p) for hib in (True, False) for kind in GOAL_KINDS for p in (True, False)}


def test_check_goal_fails_when_point_passes_but_ci_bound_does_not():
    # Perplexity +0.5% on the point estimate, but up to +1.3% within the 95% CI: a 1% budget is not met.
    cmp = _comparison(PERPLEXITY, pct=(0.5, -0.4, 1.3))
    result = check_goal(Goal.parse("perplexity:percent-max-degradation=1"), cmp)
    assert cmp.pct.point <= 1.0 and not result.passed
    assert result.explanation == "worst case +1.3% perplexity (95% CI upper bound) > +1% allowed"


def test_check_goal_explains_in_plain_words_with_unit_and_bound():
    passed = check_goal(
        Goal.parse("perplexity:percent-max-degradation=1"), _comparison(PERPLEXITY, pct=(0.5, 0.2, 0.8))
    )
    assert passed.explanation == "worst case +0.8% perplexity (95% CI upper bound) ≤ +1% allowed"
    speed = check_goal(Goal("decode.tokens_per_s", "min-improvement", 5), _comparison(diff=(8.0, 3.0, 13.0)))
    assert (
        speed.explanation
        == "worst case +3 tokens/s decode.tokens_per_s (95% CI lower bound) < +5 tokens/s required"
    )
    floor = check_goal(Goal("decode.tokens_per_s", "threshold", 100), _comparison(b=(110.0, 104.0, 116.0)))
    assert (
        floor.explanation
        == "worst case 104 tokens/s decode.tokens_per_s for B (95% CI lower bound) ≥ 100 tokens/s required"
    )


def test_check_goal_rejects_goal_on_another_metric():
    with pytest.raises(ConfigError, match="goal on 'perplexity' checked against the comparison of 'decode"):
        check_goal(Goal("perplexity", "threshold", 20), _comparison(SPEED))


def test_check_goals_passes_only_when_every_goal_passes():
    comparisons = {
        "perplexity": _comparison(PERPLEXITY, pct=(0.5, 0.2, 0.8)),
        "decode.tokens_per_s": _comparison(SPEED, pct=(15.0, 8.0, 22.0)),
    }
    ppl = Goal.parse("perplexity:percent-max-degradation=1")
    speed = Goal.parse("decode.tokens_per_s:percent-min-improvement=10")
    assert check_goals([ppl], comparisons)[0] is True
    ok, results = check_goals([ppl, speed], comparisons)
    assert (
        ok is False
        and [r.goal for r in results] == [ppl, speed]
        and [r.passed for r in results] == [True, False]
    )
    assert check_goals([], comparisons) == (True, [])
    assert json.loads(json.dumps(results[0].to_dict()))["goal"]["kind"] == "percent-max-degradation"


def test_check_goals_rejects_unknown_metric_and_lists_known_ones():
    comparisons = {"perplexity": _comparison(PERPLEXITY), "decode.tokens_per_s": _comparison(SPEED)}
    expected = (
        "goal names unknown metric 'accuracy'; metrics in this comparison: decode.tokens_per_s, perplexity"
    )
    with pytest.raises(ConfigError, match=expected):
        check_goals([Goal("perplexity", "threshold", 20), Goal("accuracy", "threshold", 0.5)], comparisons)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "decode.tokens_per_s:percent-min-improvement=10",
            Goal("decode.tokens_per_s", "percent-min-improvement", 10),
        ),
        ("perplexity:percent-max-degradation=1", Goal("perplexity", "percent-max-degradation", 1.0)),
        (" perplexity : percent-max-degradation = 1.5% ", Goal("perplexity", "percent-max-degradation", 1.5)),
        ("prefill.latency_ms:max-degradation=0.25", Goal("prefill.latency_ms", "max-degradation", 0.25)),
        ("logit_margin:threshold=-3", Goal("logit_margin", "threshold", -3.0)),
    ],
)
def test_goal_parse_reads_metric_kind_value_and_round_trips_through_str(text, expected):
    goal = Goal.parse(text)
    assert goal == expected
    assert Goal.parse(str(goal)) == goal


def test_goal_str_keeps_full_precision():
    goal = Goal("accuracy", "max-degradation", 0.1 + 0.2)
    assert Goal.parse(str(goal)).value == goal.value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("perplexity", "expected METRIC:KIND=VALUE, e.g. 'decode.tokens_per_s:percent-min-improvement=10'"),
        ("perplexity:percent-max-degradation", "expected METRIC:KIND=VALUE"),
        ("perplexity:percent-max-degradation=", "expected METRIC:KIND=VALUE"),
        ("perplexity:percent-max-degradation=one", "value 'one', not a number; expected METRIC:KIND=VALUE"),
        ("perplexity:threshold=5%", "value '5%', not a number"),
        (
            "perplexity:percent-max-degredation=1",
            "did you mean 'percent-max-degradation'.*allowed: max-degradation",
        ),
        ("perplexity:max-degradation=-1", "takes a value of 0 or more"),
        ("perplexity:max-degradation=nan", "finite number"),
    ],
)
def test_goal_parse_rejects_malformed_text(text, message):
    with pytest.raises(ConfigError, match=message):
        Goal.parse(text)


def test_goal_rejects_unknown_kind_listing_allowed_kinds():
    with pytest.raises(ConfigError, match="goal kind 'speedup' given; allowed: " + ", ".join(GOAL_KINDS)):
        Goal("decode.tokens_per_s", "speedup", 1.2)


@pytest.mark.parametrize("kind", GOAL_KINDS)
def test_goal_round_trips_through_config_json(kind):
    goal = Goal("perplexity", kind, 1.5)
    data = json.loads(goal.to_json())
    assert data["type"] == "Goal" and data["version"] == Goal.version and data["kind"] == kind
    assert Goal.from_json(goal.to_json()) == goal


def test_goal_from_json_rejects_unknown_field():
    with pytest.raises(ConfigError, match="unknown field"):
        Goal.from_dict(
            {"type": "Goal", "version": 1, "metric": "perplexity", "kind": "threshold", "value": 2, "x": 1}
        )


def test_metric_comparison_round_trips_through_json_and_validates_verdict():
    cmp = _comparison(PERPLEXITY, pct=(0.5, 0.2, 0.8))
    again = MetricComparison.from_dict(json.loads(json.dumps(cmp.to_dict())))
    assert again == cmp and again.verdict == "worse"
    with pytest.raises(ConfigError, match="verdict 'faster' given; allowed: better, worse"):
        MetricComparison(**{**cmp.__dict__, "verdict": "faster"})


def test_a_single_measurement_is_explained_without_an_interval():
    memory = ("memory.peak_rss", "MiB", False)
    result = check_goal(
        Goal.parse("memory.peak_rss:percent-max-degradation=10"), _comparison(memory, pct=(4.0, 4.0, 4.0))
    )
    assert (
        result.passed
        and result.explanation == "change +4% memory.peak_rss (measured once, no interval) ≤ +10% allowed"
    )
