"""Plotly figures of a report, per kind of run, drawn only from what the store keeps.

Speed samples exist per round (A/B, optimisation verification) or per repeat (bench); an optimisation's
other candidates keep a median and its 95% CI per trial, so they are drawn as intervals, not boxes.
A chart whose data is missing or shaped differently is skipped with a note, never fatal: the rest of
the report still renders. Profile and training charts are in ``unbottle.reporting.figures_work``.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from unbottle.core.measurement import Measurement
from unbottle.reporting.figures_pareto import candidate_latency_figure, pareto_figure
from unbottle.reporting.parts import Report
from unbottle.reporting.styles import SERIES, Chart, esc_label, ratio_forest, styled


def _ms(samples: list[float]) -> list[float]:
    return [s * 1000.0 for s in samples]


def latency_boxes(
    series: list[tuple[str, Measurement]], drop: tuple[str, ...] = (), legend: bool = True
) -> go.Figure | None:
    """Box plots of every latency sample (ms): one panel per metric, one box per series and setting.

    Args:
        series: (series label, measurement) pairs; only measurements in seconds with 2+ samples count.
        drop: parameter names left out of the x labels (e.g. the A/B side, shown as the series).
        legend: show the series labels (off when there is one unnamed series).
    """
    picked = [(label, m) for label, m in series if m.unit == "s" and len(m.samples) >= 2]
    if not picked:
        return None
    names = list(dict.fromkeys(m.name for _, m in picked))
    cols = 2 if len(names) == 4 else min(len(names), 3)
    rows = -(-len(names) // cols)
    titles = [esc_label(n) for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08)
    labels = list(dict.fromkeys(lb for lb, _ in picked))
    for i, name in enumerate(names):
        panel = [(lb, m) for lb, m in picked if m.name == name]
        where = _setting_labels([m for _, m in panel], drop)
        for j, label in enumerate(labels):
            # One trace per series and panel, so grouped boxes line up by series.
            mine = [(k, m) for k, (lb, m) in enumerate(panel) if lb == label]
            if not mine:
                continue
            fig.add_trace(
                go.Box(
                    y=[v for _, m in mine for v in _ms(m.samples)],
                    x=[where[k] for k, m in mine for _ in m.samples],
                    name=esc_label(label or name),
                    legendgroup=label,
                    showlegend=legend and i == 0,
                    marker_color=SERIES[j % len(SERIES)],
                    boxpoints="all",
                    jitter=0.4,
                    pointpos=0,
                    hovertemplate="%{x}: %{y:.2f} ms<extra>" + esc_label(label or name) + "</extra>",
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
    fig.update_layout(boxmode="group" if len(labels) > 1 else "overlay")
    fig.update_yaxes(title_text="ms", col=1)
    return styled(fig, 380 * rows + (40 if legend else 0), legend=legend)


_SHORT_PARAMS = {"batch_size": "batch", "prompt_length": "prompt", "new_tokens": "new tokens"}


def _setting_labels(measurements: list[Measurement], drop: tuple[str, ...]) -> list[str]:
    """Short x labels: only the parameters that differ within a panel, e.g. ``batch 4``."""
    keys = [k for m in measurements for k in m.params if k not in drop]
    varying = [k for k in dict.fromkeys(keys) if len({str(m.params.get(k)) for m in measurements}) > 1]
    return [
        ", ".join(f"{_SHORT_PARAMS.get(k, k)} {m.params.get(k)}" for k in varying)
        or str(m.params.get("scenario") or m.scenario)
        for m in measurements
    ]


def bench_latency(report: Report) -> Chart | None:
    fig = latency_boxes([("", m) for m in report.measurements], legend=False)
    if fig is None:
        return None
    caption = "every measured repeat (dots) with its quartiles (box); one box per scenario setting"
    return Chart("latency", "latency distributions", fig, caption)


def _side_series(report: Report) -> list[tuple[str, Measurement]]:
    cmp = (
        report.document.get("comparison") or (report.document.get("optimize") or {}).get("verification") or {}
    )
    names = {"A": f"A: {cmp.get('a', 'baseline')}", "B": f"B: {cmp.get('b', 'candidate')}"}
    return [(names.get(m.params.get("side"), str(m.params.get("side"))), m) for m in report.measurements]


def ab_latency(report: Report) -> Chart | None:
    fig = latency_boxes(_side_series(report), drop=("side", "per"))
    if fig is None:
        return None
    caption = "one dot per interleaved round (A and B alternate, so drift hits both alike)"
    return Chart("latency", "latency distributions per side", fig, caption)


def compare_latency(report: Report) -> Chart | None:
    series = [(f"run {rid}", m) for rid, ms in report.related.items() for m in ms]
    fig = latency_boxes(series)
    if fig is None:
        return None
    return Chart("latency", "latency distributions of the compared runs", fig, "one dot per measured repeat")


def verification_latency(report: Report) -> Chart | None:
    fig = latency_boxes(_side_series(report), drop=("side", "per"))
    if fig is None:
        return None
    caption = (
        "the verification A/B: one dot per interleaved round of the baseline (A) and the saved winner (B)"
    )
    return Chart("latency", "latency distributions: baseline vs winner", fig, caption)


def comparison_ratios(report: Report) -> Chart | None:
    doc = report.document.get("comparison")
    if not doc or not doc.get("metrics"):
        return None
    caption = "green: B better, red: B worse, grey: no significant difference; whiskers are 95% CIs"
    return Chart("ratios", "B/A ratios with 95% confidence intervals", ratio_forest(doc["metrics"]), caption)


def verification_ratios(report: Report) -> Chart | None:
    doc = (report.document.get("optimize") or {}).get("verification")
    if not doc:
        return None
    caption = "winner / baseline per metric; green: better, red: worse, grey: no significant difference"
    return Chart(
        "verification", "verification ratios (winner / baseline)", ratio_forest(doc["metrics"]), caption
    )


def eval_scores(report: Report) -> Chart | None:
    evals = [e for e in report.result.get("evals", []) if len(e.get("scores") or []) >= 2]
    if not evals:
        return None
    fig = make_subplots(rows=1, cols=len(evals), subplot_titles=[e["metric"] for e in evals])
    for i, e in enumerate(evals, start=1):
        fig.add_trace(
            go.Box(
                y=e["scores"],
                name=e.get("score_name") or e["metric"],
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(title_text=e.get("score_unit") or "", row=1, col=i)
    return Chart(
        "scores", "per-sample scores", styled(fig, 380, legend=False), "one dot per scored window or item"
    )


def pareto(report: Report) -> Chart | None:
    opt = report.document.get("optimize")
    if not opt:
        return None
    fig, caption = pareto_figure(opt)
    return None if fig is None else Chart("pareto", "speed vs accuracy of every trial", fig, caption)


def candidate_latency(report: Report) -> Chart | None:
    opt = report.document.get("optimize")
    if not opt or not report.trials:
        return None
    fig, metric = candidate_latency_figure(opt, report.trials)
    if fig is None:
        return None
    caption = (
        f"{metric}: median and 95% CI of each candidate (B) and of the baseline in the same trial (A); "
        "screening uses few rounds, so its intervals are wide"
    )
    return Chart("candidates", "latency per candidate", fig, caption)
