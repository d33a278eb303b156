"""The optimisation charts: every trial's speed against its accuracy, and latency per candidate.

The Pareto chart plots each trial's objective gain (> 1 is faster, whatever the metric's direction)
against its accuracy loss, with the front of trials no other beats on both, and the accuracy guard
as a line: screening trials are judged on their point at twice the limit, finalists and the
verification on the 95% CI bound, so their whiskers are drawn.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from unbottle.optimizer import judge
from unbottle.optimizer.candidates import short_key
from unbottle.reporting.styles import BAD, BASE, GOOD, NEUTRAL, esc_label, guard_limit, styled

_STAGES = {
    "screen": ("screened (point estimate)", "circle-open"),
    "final": ("finalist (95% CI)", "circle"),
    "verify": ("verified on the saved model", "square"),
}
_LATENCY = (
    "decode.token_latency",
    "decode.ttft",
    "decode.request_latency",
    "prefill.latency",
    "generate.latency",
)
_LABEL_CHARS = 34


def _short(key: str) -> str:
    text = short_key(key)
    return esc_label(text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…")


def _loss_ci(change: dict[str, Any] | None) -> tuple[float, float] | None:
    """The accuracy loss interval (low, high) on the chart's axis; perplexity % up or accuracy pt down."""
    if not change or change["ci_low"] == change["ci_high"]:
        return None
    if change["metric"] == "perplexity":
        return change["ci_low"], change["ci_high"]
    return -change["ci_high"], -change["ci_low"]


def pareto_figure(opt: dict[str, Any]) -> tuple[go.Figure | None, str]:
    """The speed-vs-accuracy scatter of ``opt``'s trials, with the front and the guard; and a caption."""
    rows = [r for r in opt["trials"] if r.get("gain") and r.get("status") == "ok"]
    if not rows:
        return None, ""
    metric = next((r["accuracy"]["metric"] for r in rows if r.get("accuracy")), "perplexity")
    limit = guard_limit(opt.get("guard") or [], metric)
    losses = [judge.degradation(r.get("accuracy")) for r in rows]
    cap = _x_cap(losses, limit)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0.0],
            y=[1.0],
            mode="markers",
            name="baseline",
            marker={"symbol": "diamond", "size": 13, "color": BASE},
            hovertemplate="baseline<extra></extra>",
        )
    )
    clipped = 0
    for stage, (name, symbol) in _STAGES.items():
        picked = [(r, loss) for r, loss in zip(rows, losses, strict=True) if r["stage"] == stage]
        if picked:
            clipped += _stage_trace(fig, picked, name, symbol, cap, with_ci=stage != "screen")
    _front(fig, opt, cap)
    _winner(fig, opt)
    unit = "%" if metric == "perplexity" else " pt"
    if limit is not None:
        _guard_lines(fig, limit, unit, cap)
    fig.update_xaxes(range=[min(-0.05 * cap, min(losses) - 0.05 * cap), cap * 1.04], zeroline=True)
    what = "perplexity change, % (lower is better)" if metric == "perplexity" else "accuracy loss, points"
    styled(fig, 560, x=what, y=f"{opt['objective']['name']} gain, × baseline (higher is better)")
    caption = (
        "green: met the guard, red: broke it; the dashed line joins the trials no other beats on both "
        "speed and accuracy (the Pareto table also weighs model size)"
    )
    if clipped:
        caption += (
            f"; {clipped} trial(s) lost more accuracy than the axis shows and sit at its right edge (▶)"
        )
    return fig, caption


def _x_cap(losses: list[float], limit: float | None) -> float:
    """The x axis end: three times the guard, or past every passing trial, whichever is wider."""
    base = 3 * limit if limit else 3.0
    inside = [x for x in losses if x <= base * 2]
    return max([base, *(x * 1.15 for x in inside)])


def _stage_trace(
    fig: go.Figure,
    picked: list[tuple[dict[str, Any], float]],
    name: str,
    symbol: str,
    cap: float,
    with_ci: bool,
) -> int:
    colors = [GOOD if r.get("guard_passed") else BAD for r, _ in picked]
    xs = [min(loss, cap) for _, loss in picked]
    symbols = ["triangle-right" if loss > cap else symbol for _, loss in picked]
    cis = [_loss_ci(r.get("accuracy")) if with_ci else None for r, _ in picked]
    hover = [
        f"{_short(r.get('candidate') or r['key'])} ({r['stage']})<br>gain ×{r['gain'][0]:.2f} "
        f"[{r['gain'][1]:.2f}, {r['gain'][2]:.2f}]<br>accuracy loss {loss:+.2f}"
        + ("" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]")
        + ("<br>meets the guard" if r.get("guard_passed") else "<br>breaks the guard")
        for (r, loss), ci in zip(picked, cis, strict=True)
    ]
    trace = go.Scatter(
        x=xs,
        y=[r["gain"][0] for r, _ in picked],
        mode="markers",
        name=name,
        marker={"symbol": symbols, "size": 11, "color": colors, "line": {"width": 2, "color": colors}},
        hovertext=hover,
        hoverinfo="text",
    )
    if with_ci:
        trace.error_y = {
            "type": "data",
            "symmetric": False,
            "array": [r["gain"][2] - r["gain"][0] for r, _ in picked],
            "arrayminus": [r["gain"][0] - r["gain"][1] for r, _ in picked],
            "color": NEUTRAL,
            "thickness": 1,
        }
        trace.error_x = {
            "type": "data",
            "symmetric": False,
            "array": [0 if ci is None else ci[1] - x for ci, x in zip(cis, xs, strict=True)],
            "arrayminus": [0 if ci is None else x - ci[0] for ci, x in zip(cis, xs, strict=True)],
            "color": NEUTRAL,
            "thickness": 1,
        }
    fig.add_trace(trace)
    return sum(1 for _, loss in picked if loss > cap)


def _front(fig: go.Figure, opt: dict[str, Any], cap: float) -> None:
    """The staircase through the points no other beats on both gain and accuracy loss, labelled."""
    points = opt["pareto"]["points"]
    front = [
        p
        for p in points
        if not any(
            q["gain"] >= p["gain"]
            and q["loss"] <= p["loss"]
            and (q["gain"] > p["gain"] or q["loss"] < p["loss"])
            for q in points
        )
    ]
    front.sort(key=lambda p: (p["loss"], p["gain"]))
    fig.add_trace(
        go.Scatter(
            x=[p["loss"] for p in front],
            y=[p["gain"] for p in front],
            mode="lines",
            line={"shape": "hv", "dash": "dash", "color": BASE, "width": 1.5},
            name="Pareto front (speed, accuracy)",
            hoverinfo="skip",
        )
    )
    for i, p in enumerate(q for q in front if q["key"] != "baseline"):
        # Labels go up and right (left near the far edge), at staggered heights, so neighbours and the
        # y axis do not print over them.
        fig.add_annotation(
            x=p["loss"],
            y=p["gain"],
            text=_short(p["key"]),
            showarrow=True,
            arrowhead=0,
            arrowcolor=NEUTRAL,
            ax=-40 if p["loss"] > 0.7 * cap else 40,
            ay=-28 - 16 * (i % 3),
            font={"size": 12},
            bgcolor="rgba(255,255,255,0.8)",
        )


def _winner(fig: go.Figure, opt: dict[str, Any]) -> None:
    winner = opt.get("winner")
    if not winner:
        return
    fig.add_trace(
        go.Scatter(
            x=[judge.degradation(winner.get("accuracy"))],
            y=[winner["gain"][0]],
            mode="markers",
            name="winner (saved)",
            marker={
                "symbol": "star",
                "size": 20,
                "color": "#f9a825",
                "line": {"width": 1, "color": "#5d4037"},
            },
            hovertext=[f"winner: {_short(winner['key'])}"],
            hoverinfo="text",
        )
    )


def _guard_lines(fig: go.Figure, limit: float, unit: str, cap: float) -> None:
    fig.add_vrect(x0=limit, x1=cap * 1.04, fillcolor=BAD, opacity=0.06, line_width=0, layer="below")
    fig.add_vline(
        x=limit,
        line_dash="dash",
        line_color=BAD,
        annotation_text=f"guard: +{limit:g}{unit}",
        annotation_position="top right",
        annotation_font_color=BAD,
    )
    if 2 * limit < cap:
        fig.add_vline(
            x=2 * limit,
            line_dash="dot",
            line_color="#e57373",
            annotation_text="screening limit (2×)",
            annotation_position="bottom right",
            annotation_font_color="#e57373",
        )


def _latency_metric(opt: dict[str, Any], trials: dict[str, dict[str, Any]]) -> str | None:
    """The latency metric to draw: the objective's if it is a latency, else the first one measured."""
    measured: set[str] = set()
    for t in trials.values():
        measured |= set(((t.get("result") or {}).get("comparisons") or {}).keys())
    objective = opt["objective"].get("metric")
    prefs = ((objective,) if objective in _LATENCY else ()) + _LATENCY
    return next((m for m in prefs if m in measured), None)


def candidate_latency_figure(
    opt: dict[str, Any], trials: dict[str, dict[str, Any]]
) -> tuple[go.Figure | None, str]:
    """Each trial's latency median (ms) with its 95% CI, beside the baseline's in the same trial."""
    metric = _latency_metric(opt, trials)
    if metric is None:
        return None, ""
    numbers = {r["key"]: i for i, r in enumerate((r for r in opt["trials"] if r["stage"] != "baseline"), 1)}
    rows = []
    for key, t in trials.items():
        cmp = ((t.get("result") or {}).get("comparisons") or {}).get(metric)
        if t.get("status") == "ok" and cmp and t.get("stage") in _STAGES:
            name = _short((t.get("candidate") or {}).get("key") or key)
            rows.append((f"#{numbers.get(key, '?')} {name} · {t['stage']}", cmp))
    if not rows:
        return None, metric
    fig = go.Figure()
    for side, name, color, symbol in (
        ("a", "baseline (A)", NEUTRAL, "line-ns-open"),
        ("b", "candidate (B)", BASE, "circle"),
    ):
        est = [c[side] for _, c in rows]
        fig.add_trace(
            go.Scatter(
                x=[e["point"] * 1e3 for e in est],
                y=[label for label, _ in rows],
                mode="markers",
                name=name,
                marker={
                    "color": color,
                    "size": 10 if side == "b" else 14,
                    "symbol": symbol,
                    "line": {"width": 2},
                },
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [(e["ci_high"] - e["point"]) * 1e3 for e in est],
                    "arrayminus": [(e["point"] - e["ci_low"]) * 1e3 for e in est],
                    "color": color,
                    "thickness": 1.5,
                },
                hovertemplate="%{y}: %{x:.2f} ms<extra>" + name + "</extra>",
            )
        )
    fig.update_yaxes(autorange="reversed", automargin=True)
    return styled(fig, 140 + 30 * len(rows), x=f"{metric}, ms (median, 95% CI)"), metric
