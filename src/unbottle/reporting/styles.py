"""The look shared by every chart of a report: colours, the figure frame, the ratio forest plot."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import plotly.graph_objects as go

from unbottle.stats import Goal

GOOD, BAD, NEUTRAL, BASE = "#2e7d32", "#c62828", "#757575", "#1f4e79"


VERDICT_COLOR = {"better": GOOD, "worse": BAD}


_RATIO_TICKS = (
    (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0),
    (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0),
    (0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0),
)


SERIES = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


@dataclasses.dataclass(frozen=True)
class Chart:
    """One figure with its heading and a sentence saying how to read it."""

    key: str
    title: str
    figure: go.Figure
    caption: str = ""


def styled(fig: go.Figure, height: int, x: str = "", y: str = "", legend: bool = True) -> go.Figure:
    """The common look: white template, readable fonts, legend (if any) above the plot."""
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 70, "r": 30, "t": 80 if legend else 40, "b": 60},
        font={"size": 13, "family": "DejaVu Sans, Arial, sans-serif"},
        # Above the plot area, clear of subplot titles: anchored to the figure's top edge.
        legend={
            "orientation": "h",
            "yref": "container",
            "y": 1.0,
            "yanchor": "top",
            "xanchor": "left",
            "x": 0,
        },
        showlegend=legend,
        hoverlabel={"namelength": -1},
    )
    if x:
        fig.update_xaxes(title_text=x)
    if y:
        fig.update_yaxes(title_text=y)
    return fig


def esc_label(text: str) -> str:
    """Text shown literally by plotly, which reads HTML-like tags, entities and ``%{...}`` in labels."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("%{", "% {")


def ratio_forest(metrics: dict[str, dict[str, Any]], ratio_of: str = "B/A") -> go.Figure:
    """Each metric's ratio with its 95% CI on a log axis, coloured by verdict; 1 means no change."""
    names = list(metrics)[::-1]
    fig = go.Figure()
    for name in names:
        m = metrics[name]
        r = m["ratio"]
        fig.add_trace(
            go.Scatter(
                x=[r["point"]],
                y=[name],
                mode="markers",
                marker={"size": 11, "color": VERDICT_COLOR.get(m.get("verdict"), NEUTRAL)},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["ci_high"] - r["point"]],
                    "arrayminus": [r["point"] - r["ci_low"]],
                    "thickness": 2,
                },
                showlegend=False,
                hovertemplate=(
                    f"{name}: ×{r['point']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
                    f"({m.get('verdict', '')})<extra></extra>"
                ),
            )
        )
    fig.add_vline(x=1.0, line_dash="dash", line_color=NEUTRAL)
    values = [
        v
        for m in metrics.values()
        for v in (m["ratio"]["ci_low"], m["ratio"]["ci_high"], m["ratio"]["point"])
    ]
    ticks = log_ticks(min([*values, 1.0]), max([*values, 1.0]))
    low, high = min([*values, 1.0]) / 1.3, max([*values, 1.0]) * 1.3
    fig.update_xaxes(
        type="log",
        tickvals=ticks,
        ticktext=[f"×{t:g}" for t in ticks],
        tickangle=0,
        range=[math.log10(low), math.log10(high)],
    )
    return styled(
        fig, max(200, 100 + 45 * len(names)), x=f"ratio {ratio_of} (log scale; 95% CI)", legend=False
    )


def log_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Round ratios to label a log axis spanning ``low`` to ``high``: the finest set that fits ``most``."""
    for ticks in _RATIO_TICKS:
        inside = [t for t in ticks if low / 1.3 <= t <= high * 1.3]
        if len(inside) <= most and ticks[0] <= low * 1.3 and ticks[-1] >= high / 1.3:
            return inside
    return [t for t in _RATIO_TICKS[-1] if low / 1.3 <= t <= high * 1.3]


def guard_limit(guard: list[str], metric: str) -> float | None:
    """The accuracy guard's limit on the Pareto chart's x axis (perplexity % or accuracy points)."""
    wanted = "percent-max-degradation" if metric == "perplexity" else "max-degradation"
    for text in guard:
        try:
            goal = Goal.parse(text)
        except Exception:  # a guard text from another version: draw no line rather than fail
            continue
        if goal.metric == metric and goal.kind == wanted:
            return goal.value
    return None
