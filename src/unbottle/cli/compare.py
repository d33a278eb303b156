"""``unbottle compare``: compare two stored runs, with goals, for CI pipelines."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from unbottle.cli.common import FailOnRegressionOpt, GoalOpt, JsonOpt, exit_on_regression, handle_errors

EXAMPLES = """
Examples:

  unbottle compare 3 7 --json

  unbottle compare 3 last --goal decode.tokens_per_s:percent-max-degradation=5 --fail-on-regression
"""


@handle_errors
def compare(
    run_a: Annotated[str, typer.Argument(help="Baseline run id (or 'last').")],
    run_b: Annotated[str, typer.Argument(help="Candidate run id (or 'last').")],
    goal: GoalOpt = None,
    fail_on_regression: FailOnRegressionOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Compare two stored bench runs (unpaired) or eval runs (paired by sample); the result is stored."""
    from unbottle.cli.show import show_run
    from unbottle.comparison.document import comparison_document
    from unbottle.comparison.runs import compare_stored
    from unbottle.core.env import manifest
    from unbottle.stats import Goal
    from unbottle.store import Store

    goals = [Goal.parse(g) for g in goal or []]
    store = Store()
    a, b = store.get_run(run_a), store.get_run(run_b)
    comparisons = compare_stored(a, store.measurements(a.id), b, store.measurements(b.id))
    doc = comparison_document(
        comparisons, goals, f"run {a.id} ({a.model})", f"run {b.id} ({b.model})", runs=[a.id, b.id]
    )
    config = {"runs": [a.id, b.id], "goals": [g.to_dict() for g in goals]}
    run_id = store.start_run("compare", f"{a.model} vs {b.model}", config, manifest(), argv=sys.argv)
    store.finish_run(run_id, "complete", result={"comparison": doc})
    show_run(store, run_id, json_)
    exit_on_regression(doc, fail_on_regression)
