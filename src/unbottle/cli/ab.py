"""``unbottle ab``: interleaved A/B speed test of two models, optionally with paired accuracy."""

from __future__ import annotations

from typing import Annotated

import typer

from unbottle.api.comparing import ab as run_ab
from unbottle.cli.common import (
    FailOnRegressionOpt,
    GoalOpt,
    JsonOpt,
    QuietOpt,
    ThreadsOpt,
    exit_on_regression,
    handle_errors,
)
from unbottle.cli.show import show_run
from unbottle.comparison.ab import ABConfig
from unbottle.evaluation import EvalConfig
from unbottle.reporting.progress import Progress
from unbottle.stats import Goal
from unbottle.store import Store

EXAMPLES = """
Examples:

  unbottle ab smollm2-135m smollm2-135m --threads 1 --json      # A-vs-A: measures the noise floor

  unbottle ab smollm2-135m ./int8-model --eval --goal perplexity:percent-max-degradation=1

  unbottle ab base.gguf candidate/ --scenario prefill --prompt-length 512 --fail-on-regression
  unbottle ab smollm2-135m smollm2-135m --speculative lookup --threads 1   # what speculation gains
"""


@handle_errors
def ab(
    model_a: Annotated[str, typer.Argument(help="Baseline model (A).")],
    model_b: Annotated[str, typer.Argument(help="Candidate model (B).")],
    scenario: Annotated[str, typer.Option(help="decode, prefill, generate, serve; encode.")] = "decode",
    rate: Annotated[float, typer.Option(help="serve: requests/s arriving (Poisson), 16 per round.")] = 1.0,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (A B, B A, ...).")] = 10,
    repeats_per_round: Annotated[int, typer.Option(help="Repeats per side per round.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Batch rows.")] = 1,
    prompt_length: Annotated[int, typer.Option(help="Prompt tokens.")] = 32,
    new_tokens: Annotated[int, typer.Option(help="Tokens per decode/generate repeat.")] = 64,
    threads: ThreadsOpt = None,
    speculative: Annotated[
        str | None,
        typer.Option(help="'lookup' or 'draft=MODEL' (same vocabulary): B drafts, A decodes plainly."),
    ] = None,
    eval_: Annotated[bool, typer.Option("--eval", help="Also compare accuracy, paired by sample.")] = False,
    eval_text: Annotated[str | None, typer.Option(help="Text for perplexity [default: packaged].")] = None,
    eval_tokens: Annotated[int, typer.Option(help="Perplexity token budget with --eval.")] = 4096,
    task: Annotated[str | None, typer.Option(help="Multiple-choice task with --eval.")] = None,
    max_items: Annotated[int, typer.Option(help="Task items with --eval.")] = 200,
    goal: GoalOpt = None,
    fail_on_regression: FailOnRegressionOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run A and B in alternating rounds; report B/A per metric with a paired bootstrap 95% CI."""
    config = ABConfig(
        scenario=scenario,
        rounds=rounds,
        repeats_per_round=repeats_per_round,
        batch_size=batch_size,
        prompt_length=prompt_length,
        new_tokens=new_tokens,
        threads=threads,
        speculative=speculative,
        rate=rate,
    )
    eval_config = (
        EvalConfig(eval_text=eval_text, eval_tokens=eval_tokens, task=task, max_items=max_items)
        if eval_
        else None
    )
    goals = [Goal.parse(g) for g in goal or []]

    store = Store()
    with Progress(quiet) as progress:
        doc = run_ab(model_a, model_b, config, eval=eval_config, goals=goals, store=store, progress=progress)
    show_run(store, doc["run_id"], json_, doc)
    exit_on_regression(doc["comparison"], fail_on_regression)
