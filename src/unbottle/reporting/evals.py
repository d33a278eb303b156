"""Evaluation results for people and machines: headline values with bootstrap CIs over samples."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.table import Table

from unbottle.comparison.accuracy import pooled_value
from unbottle.evaluation import EvalResult
from unbottle.reporting.console import fmt


def value_estimate(result: EvalResult) -> Any:
    """The headline value with a bootstrap 95% CI over the result's samples (windows, items)."""
    weights = result.weights if result.weights else [1.0] * len(result.scores)
    return pooled_value(
        np.asarray(result.scores, dtype=float), np.asarray(weights, dtype=float), result.metric
    )


def eval_entry(result: EvalResult) -> dict[str, Any]:
    est = value_estimate(result)
    return {
        "evaluator": result.evaluator,
        "metric": result.metric,
        "value": result.value,
        "ci95": [est.ci_low, est.ci_high],
        "higher_is_better": result.higher_is_better,
        "n_samples": len(result.scores),
        "score_name": result.score_name,
        "score_unit": result.score_unit,
        "seconds": result.seconds,
        "details": result.details,
    }


def evals_table(results: list[EvalResult]) -> Table:
    table = Table(
        title="evaluation (95% CI over samples)",
        title_justify="left",
        header_style="bold",
        title_style="bold",
    )
    for col, justify in [
        ("metric", "left"),
        ("value", "right"),
        ("95% CI", "right"),
        ("samples", "right"),
        ("seconds", "right"),
        ("how", "left"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        e = eval_entry(r)
        lo, hi = e["ci95"]
        d = r.details
        how = ", ".join(
            f"{k}={d[k]}"
            for k in (
                "eval_tokens",
                "window",
                "stride",
                "bos_prepended",
                "task",
                "n_items",
                "length_normalize",
            )
            if k in d
        )
        table.add_row(
            r.metric, fmt(r.value), f"{fmt(lo)}–{fmt(hi)}", str(len(r.scores)), f"{r.seconds:.1f}", how
        )
    return table
