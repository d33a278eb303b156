"""Reading trial results: objective gain, the accuracy guard, the Pareto front.

A trial's comparisons are stored as dicts (``MetricComparison.to_dict``). The objective's change is
turned into a *gain factor* (> 1 is better whatever the metric's direction: 2.0 is twice the tokens/s
or half the latency), so candidates rank on one scale. Screening judges the guard on point estimates
(a few hundred tokens can't give a tight interval); finalists and the verification judge it on the
CI bound.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from unbottle.stats import Estimate, Goal, MetricComparison, check_goals


def gain(comparison: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """(point, low, high) gain factor of one comparison dict; None when it is missing."""
    if not comparison:
        return None
    pct = comparison["pct"]
    ratios = [1 + pct[k] / 100 for k in ("point", "ci_low", "ci_high")]
    if comparison["higher_is_better"]:
        return ratios[0], ratios[1], ratios[2]
    inv = [1 / r if r > 0 else float("inf") for r in ratios]
    return inv[0], inv[2], inv[1]


# The phases of one request, each verified: (phase, metric of the decode A/B, what it measures).
PHASES = (
    ("prefill", "decode.ttft", "time to first token"),
    ("decode", "decode.tokens_per_s", "decode tokens/s"),
    ("request", "decode.request_latency", "whole request latency"),
)


def phases(comparisons: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each request phase the comparisons hold: its gain and whether it got slower beyond doubt
    (the whole interval of the gain below 1)."""
    out = []
    for phase, metric, what in PHASES:
        g = gain(comparisons.get(metric))
        if g is not None:
            out.append({"phase": phase, "metric": metric, "what": what, "gain": g, "regressed": g[2] < 1.0})
    return out


def phase_line(rows: list[dict[str, Any]], prompt: int, new: int) -> str:
    """``prefill ×0.55 [0.50, 0.61] REGRESSED, decode ×3.1 [..], request ×1.9 [..]`` with the shape."""
    parts = [
        f"{r['phase']} ×{r['gain'][0]:.2f} [{r['gain'][1]:.2f}, {r['gain'][2]:.2f}]"
        + (" REGRESSED" if r["regressed"] else "")
        for r in rows
    ]
    return f"request prompt={prompt},new={new}: " + ", ".join(parts)


def guard(goals: list[Goal], comparisons: dict[str, dict[str, Any]], on_point: bool) -> dict[str, Any]:
    """Check the accuracy goals; ``on_point`` judges the point estimate instead of the CI bound."""
    cmps = {}
    for goal in goals:
        data = comparisons.get(goal.metric)
        if data is None:
            return {"passed": False, "results": [], "missing": goal.metric}
        cmp = MetricComparison.from_dict(data)
        if on_point:
            cmp = dataclasses.replace(
                cmp, pct=_collapsed(cmp.pct), diff=_collapsed(cmp.diff), b=_collapsed(cmp.b)
            )
        cmps[goal.metric] = cmp
    passed, results = check_goals(goals, cmps)
    return {"passed": passed, "results": [r.to_dict() for r in results], "on": "point" if on_point else "ci"}


def _collapsed(e: Estimate) -> Estimate:
    return Estimate(e.point, e.point, e.point, e.confidence, e.n, e.method + " (point)")


def accuracy_change(comparisons: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The perplexity change in percent (point, low, high), else the accuracy change in points, else
    an encoder's embedding cosine change, else its pseudo-perplexity change in percent, else a
    classifier's label agreement change."""
    fields = {
        "perplexity": "pct", "accuracy": "diff", "embedding_cosine": "diff", "pseudo_perplexity": "pct",
        "label_agreement": "diff",
    }  # fmt: skip
    for metric, field in fields.items():
        if metric in comparisons:
            e = comparisons[metric][field]
            return {"metric": metric, "point": e["point"], "ci_low": e["ci_low"], "ci_high": e["ci_high"]}
    return None


def pareto_front(points: list[dict[str, Any]]) -> list[str]:
    """Keys of the points no other point beats on every axis.

    Each point has ``key``, ``gain`` (higher is better), ``loss`` (accuracy degradation, lower is
    better) and ``weights_mib`` (lower is better).
    """

    def dominates(p: dict[str, Any], q: dict[str, Any]) -> bool:
        better_or_equal = (
            p["gain"] >= q["gain"] and p["loss"] <= q["loss"] and p["weights_mib"] <= q["weights_mib"]
        )
        strictly = p["gain"] > q["gain"] or p["loss"] < q["loss"] or p["weights_mib"] < q["weights_mib"]
        return better_or_equal and strictly

    return [q["key"] for q in points if not any(dominates(p, q) for p in points if p is not q)]


def degradation(change: dict[str, Any] | None) -> float:
    """Accuracy loss as one number for the Pareto front (perplexity % up, or accuracy points down)."""
    if change is None:
        return 0.0
    return change["point"] if change["metric"] == "perplexity" else -change["point"]


SCREEN_SLACK = 2.0


# A per-layer fallback made for a finalist that broke the guard on its interval must meet half the
# limit on screening's point estimate: the interval's half-width and the held-out text take the rest
# (MiniLM, dynamic int8: -0.0185 cosine on the selection text read -0.0246 [-0.0295, -0.0208] held out).
RESCUE_MARGIN = 0.5


def screening_goals(goals: list[Goal], factor: float = SCREEN_SLACK) -> list[Goal]:
    """The guard for screening: degradation limits widened ``SCREEN_SLACK`` times (``factor``).

    A few hundred tokens give a noisy point estimate (a +0.5% change can read +1% on 1024 tokens),
    so screening only rejects clear failures; finalists and the verification apply the real limits
    on the CI bound.
    """
    out = []
    for g in goals:
        if g.kind.endswith("max-degradation"):
            g = dataclasses.replace(g, value=g.value * factor)
        out.append(g)
    return out


def closest(faster: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of screened candidates that were faster, the one whose accuracy changed least (None: none)."""
    if not faster:
        return None
    return min(faster, key=lambda s: degradation(accuracy_change(s["trial"]["result"]["comparisons"])))
