"""Profile and training charts: hotspots per phase, the roofline, step-time split and loss curves.

Training results are read key by key: a missing field skips its chart (``None``), and parts of a step
the training code adds later (e.g. ``comm_s``) are drawn without changes here.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from unbottle.reporting.kinds_work import breakdown_seconds
from unbottle.reporting.parts import Report
from unbottle.reporting.styles import BASE, NEUTRAL, SERIES, Chart, ratio_forest, styled

_PART_ORDER = ("data_s", "forward_s", "backward_s", "comm_s", "optimizer_s", "other_s")


def hotspots(report: Report) -> Chart | None:
    """Time per module group, one panel per phase, as bars labelled with their share of the wall time."""
    phases = ((report.document.get("profile") or {}).get("phases")) or {}
    if not phases:
        return None
    fig = make_subplots(
        rows=1,
        cols=len(phases),
        subplot_titles=[f"{p} (wall {d['wall_s'] * 1e3:.0f} ms)" for p, d in phases.items()],
        horizontal_spacing=0.14,
    )
    for i, (phase, data) in enumerate(phases.items(), start=1):
        groups = sorted(data["groups"].items(), key=lambda kv: kv[1])
        wall = data["wall_s"]
        fig.add_trace(
            go.Bar(
                x=[s * 1e3 for _, s in groups],
                y=[g for g, _ in groups],
                orientation="h",
                marker_color=SERIES[i - 1],
                text=[f"{s / wall:.0%}" for _, s in groups],
                textposition="outside",
                cliponaxis=False,
                name=phase,
                hovertemplate="%{y}: %{x:.2f} ms<extra>" + phase + "</extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="ms", row=1, col=i)
    caption = "time inside each module group per phase (labels: share of the phase's wall time)"
    return Chart("hotspots", "hotspots by module group", styled(fig, 360, legend=False), caption)


def roofline(report: Report) -> Chart | None:
    """Log-log roofline: the bandwidth slope, one compute ceiling per measured dtype, the phases."""
    doc = report.document.get("profile") or {}
    peaks, points = doc.get("peaks"), doc.get("roofline")
    if not peaks or not points:
        return None
    bw = float(peaks["bandwidth_gbps"])
    ceilings = {k: float(v) for k, v in peaks["matmul_gflops"].items() if v}
    ridges = [c / bw for c in ceilings.values()]
    intensities = [float(p["intensity"]) for p in points.values()]
    x0 = 10 ** math.floor(math.log10(min([*intensities, *ridges]) / 4))
    x1 = 10 ** math.ceil(math.log10(max([*intensities, *ridges]) * 4))
    fig = go.Figure()
    _roofs(fig, bw, ceilings, x0, x1)
    for i, (phase, p) in enumerate(points.items()):
        fig.add_trace(
            go.Scatter(
                x=[p["intensity"]],
                y=[p["achieved_gflops"]],
                mode="markers+text",
                text=[f"{phase}: {p['achieved_gflops']:.1f} GFLOP/s ({p['bound']})"],
                textposition="bottom center",
                marker={"size": 14, "color": BASE if i == 0 else "#d84315", "symbol": "circle"},
                name=phase,
            )
        )
    y0 = min([bw * x0, *(float(p["achieved_gflops"]) for p in points.values())]) / 2
    y1 = max(ceilings.values()) * 2.5
    # Decades only: log axes otherwise label every minor tick (2, 3, 5, ...) and read as noise.
    fig.update_xaxes(type="log", range=[math.log10(x0), math.log10(x1)], dtick=1)
    fig.update_yaxes(type="log", range=[math.log10(y0), math.log10(y1)], dtick=1)
    styled(fig, 520, x="arithmetic intensity, FLOP per byte (log)", y="GFLOP/s (log)")
    caption = (
        "ceilings from the measured machine peaks; a phase left of the ridge is limited by memory "
        "bandwidth, right of it by compute; the gap below the roof is time a faster kernel could win"
    )
    return Chart("roofline", "roofline", fig, caption)


def _roofs(fig: go.Figure, bw: float, ceilings: dict[str, float], x0: float, x1: float) -> None:
    """The bandwidth slope up to the highest ridge and one flat compute ceiling per dtype."""
    fig.add_trace(
        go.Scatter(
            x=[x0, max(ceilings.values()) / bw],
            y=[bw * x0, max(ceilings.values())],
            mode="lines",
            name=f"memory bandwidth {bw:.1f} GB/s",
            line={"color": NEUTRAL, "width": 3},
        )
    )
    for i, (dtype, peak) in enumerate(ceilings.items()):
        unit = "GOP/s" if dtype == "int8" else "GFLOP/s"
        fig.add_trace(
            go.Scatter(
                x=[peak / bw, x1],
                y=[peak, peak],
                mode="lines",
                name=f"{dtype} matmul {peak:.0f} {unit}",
                line={"color": SERIES[(i + 2) % len(SERIES)], "dash": "dash"},
            )
        )


def _history(report: Report) -> list[dict[str, Any]]:
    return [h for h in report.result.get("history") or [] if isinstance(h, dict) and "step" in h]


def _is_part(key: str) -> bool:
    """A per-step time in seconds (``data_s``), not a rate (``tokens_per_s``) or the whole step."""
    return key.endswith("_s") and not key.endswith("_per_s") and key not in ("wall_s", "step_s")


def _step_axis(fig: go.Figure, steps: list[Any]) -> None:
    # Steps are whole numbers: label each one when there are few, instead of 1.5, 2.5, ...
    if steps and max(steps) - min(steps) <= 20:
        fig.update_xaxes(dtick=1)


def step_breakdown(report: Report) -> Chart | None:
    """Per-step stacked areas of data, forward, backward, (communication,) optimiser time; else one bar."""
    history = _history(report)
    parts = [k for k in _PART_ORDER if any(isinstance(h.get(k), (int, float)) for h in history)]
    parts += sorted({k for h in history for k in h if _is_part(k) and k not in parts})
    fig = go.Figure()
    if history and parts:
        steps = [h["step"] for h in history]
        for i, part in enumerate(parts):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[(h.get(part) or 0.0) * 1e3 for h in history],
                    stackgroup="step",
                    name=part.removesuffix("_s"),
                    mode="lines",
                    line={"width": 0.5, "color": SERIES[i % len(SERIES)]},
                )
            )
        if all(isinstance(h.get("wall_s"), (int, float)) for h in history):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[h["wall_s"] * 1e3 for h in history],
                    name="step wall time",
                    mode="lines",
                    line={"color": "black", "dash": "dot"},
                )
            )
        styled(fig, 400, x="step", y="ms")
        fig.update_layout(legend_traceorder="normal")
        _step_axis(fig, steps)
        caption = "where each step's time went (stacked); the dotted line is the measured step time"
    else:
        split = breakdown_seconds(report.result.get("summary") or {})
        if not split:
            return None
        for i, (part, seconds) in enumerate(split.items()):
            color = SERIES[i % len(SERIES)]
            name = part.removesuffix("_s")
            fig.add_trace(
                go.Bar(x=[seconds * 1e3], y=["median step"], orientation="h", name=name, marker_color=color)
            )
        fig.update_layout(barmode="stack")
        styled(fig, 220, x="ms per step")
        caption = "the median step split into its parts (per-step history not recorded)"
    return Chart("steps", "step-time breakdown", fig, caption)


def loss_curves(report: Report) -> Chart | None:
    """Training loss per step with the validation losses as points."""
    history = [h for h in _history(report) if isinstance(h.get("loss"), (int, float))]
    validation = [v for v in report.result.get("validation") or [] if isinstance(v, dict) and "val_loss" in v]
    if not history and not validation:
        return None
    fig = go.Figure()
    if history:
        fig.add_trace(
            go.Scatter(
                x=[h["step"] for h in history],
                y=[h["loss"] for h in history],
                mode="lines+markers" if len(history) < 60 else "lines",
                name="training loss",
                line={"color": BASE},
            )
        )
    if validation:
        fig.add_trace(
            go.Scatter(
                x=[v.get("step") for v in validation],
                y=[v["val_loss"] for v in validation],
                mode="markers",
                name="validation loss",
                marker={"size": 12, "color": "#d84315", "symbol": "diamond"},
            )
        )
    styled(fig, 400, x="step", y="loss (nats/token)")
    _step_axis(fig, [h["step"] for h in history] + [v.get("step") or 0 for v in validation])
    return Chart("loss", "loss curves", fig, "training loss per optimiser step; diamonds: validation loss")


def _strategies(report: Report) -> tuple[str, dict[str, dict[str, Any]]]:
    doc = report.result.get("compare")
    if not isinstance(doc, dict):
        return "", {}
    return str(doc.get("reference", "")), {
        k: v for k, v in (doc.get("strategies") or {}).items() if isinstance(v, dict)
    }


def strategy_losses(report: Report) -> Chart | None:
    """The loss curve of each compared strategy, side by side on a shared axis."""
    ref, strategies = _strategies(report)
    named = [(n, s["losses"]) for n, s in strategies.items() if s.get("losses")]
    if not named:
        return None
    cols = min(len(named), 4)
    rows = -(-len(named) // cols)
    titles = [f"{n} (reference)" if n == ref else n for n, _ in named]
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.04
    )
    for i, (name, losses) in enumerate(named):
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(losses) + 1)),
                y=losses,
                mode="lines+markers",
                name=name,
                line={"color": SERIES[i % len(SERIES)]},
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_yaxes(title_text="loss", col=1)
    fig.update_xaxes(title_text="recorded step")
    _step_axis(fig, [len(losses) for _, losses in named] + [1])
    caption = "each strategy's training loss, trained from the same start on the same batches"
    return Chart("strategy-loss", "loss curves per strategy", styled(fig, 340 * rows, legend=False), caption)


def strategy_speed(report: Report) -> Chart | None:
    """Tokens/s of each strategy against the reference, with 95% CIs, and the per-round values."""
    ref, strategies = _strategies(report)
    metrics = {}
    for name, s in strategies.items():
        pct = (s.get("speed") or {}).get("pct")
        if pct:
            ratio = {k: 1 + pct[k] / 100 for k in ("point", "ci_low", "ci_high")}
            metrics[name] = {"ratio": ratio, "verdict": (s.get("speed") or {}).get("verdict")}
    if not metrics:
        return None
    fig = ratio_forest(metrics, ratio_of=f"tokens/s ÷ {ref}")
    rounds = {n: s["tokens_per_s"] for n, s in strategies.items() if s.get("tokens_per_s")}
    medians = ", ".join(f"{n} {statistics.median(v):,.0f}" for n, v in rounds.items())
    caption = f"paired across interleaved rounds; median tokens/s per strategy: {medians}"
    return Chart("strategy-speed", f"training speed against {ref}", fig, caption)


def perplexity_bars(report: Report) -> Any:
    models = report.result.get("models") or {}
    if not models:
        return None
    names = list(models)
    values = [models[n]["perplexity"] for n in names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=values,
            marker_color=[SERIES[i % len(SERIES)] for i in range(len(names))],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [models[n]["ci95"][1] - v for n, v in zip(names, values, strict=True)],
                "arrayminus": [v - models[n]["ci95"][0] for n, v in zip(names, values, strict=True)],
            },
            text=[f"{v:,.1f}" for v in values],
            textposition="outside",
        )
    )
    styled(fig, 420, y="perplexity (log scale; 95% CI)", legend=False)
    fig.update_yaxes(type="log")
    caption = "every model on the same held-out windows; lower is better"
    return Chart("distill-perplexity", "held-out perplexity", fig, caption)


def training_curves(report: Report) -> Any:
    runs = report.result.get("runs") or {}
    fig = go.Figure()
    for i, (name, run) in enumerate(runs.items()):
        history = run.get("history") or []
        ce = [h.get("ce", h.get("loss")) for h in history]  # the distilled run's CE part; else its loss
        color = SERIES[i % len(SERIES)]
        steps = [h["step"] for h in history]
        fig.add_trace(go.Scatter(x=steps, y=ce, mode="lines", name=f"{name}: CE", line={"color": color}))
    if not fig.data:
        return None
    styled(fig, 380, x="step", y="training cross-entropy (nats/token)")
    caption = "the cross-entropy part of each student's training loss, same batches, same start"
    return Chart("distill-curves", "training curves", fig, caption)
