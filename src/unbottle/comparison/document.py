"""The stored and printed form of a comparison: per-metric results, goals, the overall verdict."""

from __future__ import annotations

from typing import Any

from unbottle.comparison.speed import INDICATIVE
from unbottle.stats import Goal, MetricComparison, check_goals


def comparison_document(
    comparisons: dict[str, MetricComparison],
    goals: list[Goal],
    a_label: str,
    b_label: str,
    **extra: Any,
) -> dict[str, Any]:
    """JSON-ready comparison: every metric with ratio B/A and CI, goal results, overall pass/fail.

    ``overall`` is ``pass``/``fail`` against the goals, or ``no goals`` when none were given;
    ``regressions`` lists the metrics whose verdict is ``worse`` whatever the goals, on an interval
    of at least ``comparison.speed.MIN_ROUNDS`` rounds; ``indicative_regressions`` those worse on an
    interval from fewer rounds, whose coverage falls short (73.7% at 3), so they fail nothing.
    """
    worse = [n for n, c in comparisons.items() if c.verdict == "worse"]
    unsure = [n for n in worse if INDICATIVE in comparisons[n].pct.method]
    passed, results = check_goals(goals, comparisons) if goals else (None, [])
    metrics = {}
    for name, c in comparisons.items():
        entry = c.to_dict()
        entry["ratio"] = {k: 1 + entry["pct"][k] / 100 for k in ("point", "ci_low", "ci_high")}
        metrics[name] = entry
    return {
        "a": a_label,
        "b": b_label,
        "metrics": metrics,
        "goals": [r.to_dict() for r in results],
        "overall": "no goals" if passed is None else ("pass" if passed else "fail"),
        "regressions": [n for n in worse if n not in unsure],
        "indicative_regressions": unsure,
        **extra,
    }
