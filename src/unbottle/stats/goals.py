"""Goals and verdicts, judged on confidence-interval bounds, never on point estimates.

A change "meets the 1% perplexity budget" only if its worst case plausible under the data does; a point
estimate that passes with an interval that does not is a fail. The goal vocabulary follows Olive's
(max-degradation, percent-max-degradation, min-improvement, percent-min-improvement, threshold) so
that a goal reads the same in a config file, on the command line (``Goal.parse``) and in a report.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable
from typing import Any, Literal, get_args

import numpy as np

from unbottle.core.config import Config
from unbottle.core.errors import ConfigError
from unbottle.stats.estimate import Estimate

GoalKind = Literal[
    "max-degradation", "percent-max-degradation", "min-improvement", "percent-min-improvement", "threshold"
]
GOAL_KINDS: tuple[str, ...] = get_args(GoalKind)

Verdict = Literal["better", "worse", "no significant difference", "noise"]
VERDICTS: tuple[str, ...] = get_args(Verdict)

_GOAL_FORM = "METRIC:KIND=VALUE, e.g. 'decode.tokens_per_s:percent-min-improvement=10'"
_GOAL_TEXT = re.compile(r"^\s*(?P<metric>[^:=\s]+)\s*:\s*(?P<kind>[^=\s]+)\s*=\s*(?P<value>\S+?)\s*$")


@dataclasses.dataclass(frozen=True)
class Goal(Config):
    """One goal on one metric of a B-versus-A comparison.

    Attributes:
        metric: the metric's name as in the comparison, e.g. ``perplexity``, ``decode.tokens_per_s``.
        kind: ``max-degradation`` / ``min-improvement`` (in the metric's unit),
            ``percent-max-degradation`` / ``percent-min-improvement`` (in percent of A), or
            ``threshold`` (B's own value must be on the good side of ``value``).
        value: the limit; non-negative for every kind except ``threshold``.
    """

    metric: str
    kind: GoalKind
    value: float

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric.strip() or re.search(r"[:=\s]", self.metric):
            raise ConfigError(
                f"goal metric {self.metric!r} given; a metric name is non-empty text without spaces, "
                "':' or '=', e.g. 'perplexity'"
            )
        if self.kind not in GOAL_KINDS:
            hint = difflib.get_close_matches(str(self.kind), GOAL_KINDS, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"goal kind {self.kind!r} given{did_you_mean}; allowed: {', '.join(GOAL_KINDS)}"
            )
        if (
            isinstance(self.value, bool)
            or not isinstance(self.value, (int, float))
            or not math.isfinite(self.value)
        ):
            raise ConfigError(
                f"goal value {self.value!r} given for {self.metric!r}; it must be a finite number"
            )
        object.__setattr__(self, "value", float(self.value))
        if self.kind != "threshold" and self.value < 0:
            raise ConfigError(
                f"goal {self.metric}:{self.kind}={self.value:g} given; {self.kind} takes a value of 0 or "
                "more (the direction comes from the metric, e.g. perplexity:percent-max-degradation=1)"
            )

    @classmethod
    def parse(cls, text: str) -> Goal:
        """Parse ``METRIC:KIND=VALUE``, the form used on the command line.

        A trailing ``%`` on the value of a ``percent-*`` goal is accepted.

        Raises:
            ConfigError: if ``text`` is not of that form, or the kind or value is invalid.

        Example:
            >>> Goal.parse("perplexity:percent-max-degradation=1")
            Goal(metric='perplexity', kind='percent-max-degradation', value=1.0)
        """
        match = _GOAL_TEXT.match(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(f"goal {text!r} given; expected {_GOAL_FORM}")
        metric, kind, raw = match.group("metric", "kind", "value")
        if raw.endswith("%") and kind.startswith("percent-"):
            raw = raw[:-1]
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(
                f"goal {text!r} has value {raw!r}, not a number; expected {_GOAL_FORM}"
            ) from None
        return cls(metric=metric, kind=kind, value=value)  # type: ignore[arg-type]

    def __str__(self) -> str:
        """The ``METRIC:KIND=VALUE`` text that ``parse`` reads back to an equal goal."""
        value = (
            f"{self.value:.0f}" if self.value.is_integer() and abs(self.value) < 1e15 else repr(self.value)
        )
        return f"{self.metric}:{self.kind}={value}"


@dataclasses.dataclass(frozen=True)
class MetricComparison:
    """B against A on one metric: each side's value, their difference and relative change, a verdict.

    Attributes:
        metric: the metric's name, e.g. ``decode.tokens_per_s``.
        unit: its unit, e.g. ``tokens/s``; ``diff`` is in this unit.
        higher_is_better: direction of the metric.
        a: A's own value with its CI.
        b: B's own value with its CI.
        diff: B - A in the metric's unit.
        pct: relative change in percent, ``100 * (B/A - 1)`` (for perplexity the pooled change).
        verdict: ``verdict_of(pct, higher_is_better, noise_floor_pct)``.
        noise_floor_pct: run-to-run noise of this metric in percent, if measured.
    """

    metric: str
    unit: str
    higher_is_better: bool
    a: Estimate
    b: Estimate
    diff: Estimate
    pct: Estimate
    verdict: Verdict
    noise_floor_pct: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ConfigError(f"verdict {self.verdict!r} given; allowed: {', '.join(VERDICTS)}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict, estimates as nested dicts."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricComparison:
        """Rebuild a comparison from ``to_dict`` output."""
        data = dict(data)
        for name in ("a", "b", "diff", "pct"):
            data[name] = Estimate.from_dict(data[name])
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class GoalResult:
    """Whether one goal was met, the CI bound that decided it, and why, in plain words."""

    goal: Goal
    passed: bool
    bound: float
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict, the goal in its ``Config.to_dict`` form."""
        return {
            "goal": self.goal.to_dict(),
            "passed": self.passed,
            "bound": self.bound,
            "explanation": self.explanation,
        }


def verdict_of(pct: Estimate, higher_is_better: bool, noise_floor_pct: float | None = None) -> Verdict:
    """Classify a relative change by its confidence interval.

    Args:
        pct: the relative change B vs A in percent, with its CI.
        higher_is_better: direction of the metric.
        noise_floor_pct: run-to-run noise in percent; a change whose whole CI lies within
            ``±noise_floor_pct`` is called ``noise`` even if it excludes 0.

    Returns:
        ``no significant difference`` if the CI contains 0, else ``noise`` (see above), else
        ``better`` or ``worse`` by the metric's direction.

    Example:
        >>> verdict_of(Estimate(-3.0, -4.5, -1.2, 0.95, 30, "pct"), higher_is_better=False)
        'better'
    """
    if noise_floor_pct is not None and not (math.isfinite(noise_floor_pct) and noise_floor_pct >= 0):
        raise ConfigError(
            f"noise_floor_pct {noise_floor_pct!r} given; it must be a finite number >= 0 or None"
        )
    if pct.contains(0.0):
        return "no significant difference"
    if noise_floor_pct is not None and -noise_floor_pct <= pct.ci_low and pct.ci_high <= noise_floor_pct:
        return "noise"
    went_up = pct.ci_low > 0
    return "better" if went_up == higher_is_better else "worse"


def check_goal(goal: Goal, cmp: MetricComparison) -> GoalResult:
    """Check one goal against the CI bound on the unfavourable side.

    Degradation means change in the metric's bad direction (down for higher-is-better, up for
    lower-is-better). ``max-degradation``/``min-improvement`` read ``cmp.diff``, their ``percent-``
    forms read ``cmp.pct``, and ``threshold`` reads ``cmp.b``; each takes the CI bound in the bad
    direction, so a change passes only if its worst plausible case does.

    Raises:
        ConfigError: if the goal names a different metric than the comparison.

    Example: perplexity (lower is better) rose 0.5% with a 95% CI of [0.2%, 0.8%]; the goal
    ``perplexity:percent-max-degradation=1`` passes on the upper bound, explained as
    "worst case +0.8% perplexity (95% CI upper bound) ≤ +1% allowed".
    """
    if goal.metric != cmp.metric:
        raise ConfigError(f"goal on {goal.metric!r} checked against the comparison of {cmp.metric!r}")
    if goal.kind == "threshold":
        return _check_threshold(goal, cmp)
    percent = goal.kind.startswith("percent-")
    change, unit = (cmp.pct, "%") if percent else (cmp.diff, f" {cmp.unit}" if cmp.unit else "")
    # The worst case is the bound in the bad direction: the lower one when higher is better.
    bound = change.ci_low if cmp.higher_is_better else change.ci_high
    sign = 1.0 if cmp.higher_is_better else -1.0  # turns a change into an improvement
    if goal.kind.endswith("max-degradation"):
        passed = -sign * bound <= goal.value
        limit, word = -sign * goal.value, "allowed"
    else:
        passed = sign * bound >= goal.value
        limit, word = sign * goal.value, "required"
    ok_op, bad_op = ("≥", "<") if cmp.higher_is_better else ("≤", ">")
    side = "lower" if cmp.higher_is_better else "upper"
    basis = (
        "measured once, no interval"
        if change.ci_low == change.ci_high
        else f"{_pct(change.confidence)} CI {side} bound"
    )
    what = "change" if change.ci_low == change.ci_high else "worst case"
    explanation = (
        f"{what} {_num(bound, signed=True)}{unit} {cmp.metric} ({basis}) "
        f"{ok_op if passed else bad_op} {_num(limit, signed=True)}{unit} {word}"
    )
    return GoalResult(goal, bool(passed), float(bound), explanation)


def check_goals(
    goals: Iterable[Goal], comparisons: dict[str, MetricComparison]
) -> tuple[bool, list[GoalResult]]:
    """Check every goal against the comparison of its metric.

    Returns:
        ``(all passed, one GoalResult per goal in order)``; ``(True, [])`` for no goals.

    Raises:
        ConfigError: if a goal names a metric that is not in ``comparisons`` (checked before any goal).
    """
    goals = list(goals)
    for goal in goals:
        if goal.metric not in comparisons:
            known = ", ".join(sorted(comparisons)) or "(none)"
            raise ConfigError(
                f"goal names unknown metric {goal.metric!r}; metrics in this comparison: {known}"
            )
    results = [check_goal(goal, comparisons[goal.metric]) for goal in goals]
    return all(r.passed for r in results), results


def _check_threshold(goal: Goal, cmp: MetricComparison) -> GoalResult:
    own = cmp.b
    if cmp.higher_is_better:
        bound, passed, ok_op, bad_op, side = own.ci_low, own.ci_low >= goal.value, "≥", "<", "lower"
    else:
        bound, passed, ok_op, bad_op, side = own.ci_high, own.ci_high <= goal.value, "≤", ">", "upper"
    unit = f" {cmp.unit}" if cmp.unit else ""
    explanation = (
        f"worst case {_num(bound)}{unit} {cmp.metric} for B ({_pct(own.confidence)} CI {side} bound) "
        f"{ok_op if passed else bad_op} {_num(goal.value)}{unit} required"
    )
    return GoalResult(goal, bool(passed), float(bound), explanation)


def _num(x: float, signed: bool = False) -> str:
    # Four significant digits, never in scientific notation: "+0.8", "-12.35", "1234".
    return np.format_float_positional(x, precision=4, unique=False, fractional=False, trim="-", sign=signed)


def _pct(confidence: float) -> str:
    return f"{100 * confidence:g}%"
