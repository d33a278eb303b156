"""Every kind of stored run, registered once: what its JSON document adds, how a report describes it,
what the terminal shows and which charts it draws.

A new kind of run is one ``RunKind`` registered here, with its functions in the modules named. A run of
a kind not registered (written by a newer unbottle, say) still gets a document, a generic report and
its notes on the terminal.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from unbottle.benchmarking.headline import headline
from unbottle.core.measurement import Measurement
from unbottle.core.registry import Registry
from unbottle.evaluation import EvalResult
from unbottle.reporting import kinds, kinds_distill, kinds_optimize, kinds_work, views
from unbottle.reporting.evals import eval_entry
from unbottle.reporting.parts import Report

if TYPE_CHECKING:  # the charts' module loads plotly: only when a chart is drawn
    from unbottle.reporting.styles import Chart

Document = Callable[[dict[str, Any], list[Measurement]], dict[str, Any]]
View = Callable[[dict[str, Any], list[Measurement], dict[str, Any]], list[Any]]


@dataclasses.dataclass(frozen=True)
class RunKind:
    """One kind of run.

    Attributes:
        document: (stored result, measurements) → the fields its JSON document adds.
        describe: fills a ``Report``'s verdict, headline and tables; False: use the generic view.
        view: (document, measurements, stored result) → what the terminal prints (rich renderables).
        charts: ``"module:function"`` in ``unbottle.reporting``, each ``Report`` → ``Chart`` or None.
    """

    document: Document
    describe: Callable[[Report], bool] | None = None
    view: View | None = None
    charts: tuple[str, ...] = ()


RUN_KINDS: Registry[RunKind] = Registry("run kind")


def _evals(result: dict[str, Any], measurements: list[Measurement]) -> dict[str, Any]:
    return {"evals": [eval_entry(EvalResult.from_dict(e)) for e in result.get("evals", [])]}


def _field(name: str, key: str | None = None) -> Document:
    """The document carries the result's ``key`` (default ``name``) as ``name``."""
    return lambda result, _m: {name: result.get(key or name)}


def _rest(name: str) -> Document:
    """The document carries the whole result, but what every document has already, as ``name``."""
    shared = ("model", "threads", "notes")
    return lambda result, _m: {name: {k: v for k, v in result.items() if k not in shared}}


_COMPARISON_CHARTS = ("figures:comparison_ratios",)
for _name, _kind in {
    "bench": RunKind(
        lambda _r, m: {"headline": headline(m)}, kinds.bench, views.bench, ("figures:bench_latency",)
    ),
    "eval": RunKind(_evals, kinds.evals, views.evals, ("figures:eval_scores",)),
    "ab": RunKind(
        _field("comparison"), kinds.comparison, views.comparison, (*_COMPARISON_CHARTS, "figures:ab_latency")
    ),
    "compare": RunKind(
        _field("comparison"),
        kinds.comparison,
        views.comparison,
        (*_COMPARISON_CHARTS, "figures:compare_latency"),
    ),
    "optimize": RunKind(
        _field("optimize"),
        kinds_optimize.optimize,
        views.optimize,
        (
            "figures:pareto",
            "figures:verification_latency",
            "figures:candidate_latency",
            "figures:verification_ratios",
        ),
    ),
    "profile": RunKind(
        _field("profile"),
        kinds_work.profile,
        views.profile,
        ("figures_work:hotspots", "figures_work:roofline"),
    ),
    "train": RunKind(
        _rest("train"),
        kinds_work.train,
        views.train,
        tuple(
            f"figures_work:{f}"
            for f in ("step_breakdown", "loss_curves", "strategy_losses", "strategy_speed")
        ),
    ),
    "distill": RunKind(
        _rest("distill"),
        kinds_distill.describe,
        views.distill,
        ("figures_work:perplexity_bars", "figures_work:training_curves"),
    ),
    "apply": RunKind(_rest("apply"), None, views.apply),
}.items():
    RUN_KINDS.register(_name, _kind)


def kind_of(name: str) -> RunKind | None:
    """The registered kind, or None for a kind this unbottle does not know."""
    return RUN_KINDS.get(name) if name in RUN_KINDS else None


def describe(report: Report) -> None:
    """Fill ``report``'s verdict, headline and tables for its kind (the generic view as fallback)."""
    kind = kind_of(report.run.kind)
    if kind is not None and kind.describe is not None:
        try:
            if kind.describe(report):
                return
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            report.notes.append(
                f"this {report.run.kind} result has a shape this report does not read "
                f"({type(exc).__name__}: {exc}); its recorded fields are shown as they are"
            )
            report.headline, report.tables = [], []
    kinds.generic(report)


def charts_for(report: Report) -> tuple[list[Chart], list[str]]:
    """The charts of ``report``'s run and notes on any that could not be drawn."""
    kind = kind_of(report.run.kind)
    charts, notes = [], []
    for target in kind.charts if kind else ():
        module, _, name = target.partition(":")
        make = getattr(importlib.import_module(f"unbottle.reporting.{module}"), name)  # plotly: HTML only
        try:
            chart = make(report)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as exc:
            notes.append(f"chart {name} skipped: its data is incomplete ({exc!r})")
            continue
        if chart is not None:
            charts.append(chart)
    return charts, notes
