"""``unbottle compare``: compare two stored runs, with goals, for CI pipelines."""

from __future__ import annotations

from typing import Annotated

import typer

from unbottle.api.comparing import compare as run_compare
from unbottle.cli.common import FailOnRegressionOpt, GoalOpt, JsonOpt, exit_on_regression, handle_errors
from unbottle.cli.show import show_run
from unbottle.store import Store

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
    store = Store()
    doc = run_compare(run_a, run_b, goals=goal or (), store=store)
    show_run(store, doc["run_id"], json_, doc)
    exit_on_regression(doc["comparison"], fail_on_regression)
