"""``unbottle eval``: perplexity, multiple-choice accuracy and agreement with a reference model."""

from __future__ import annotations

from typing import Annotated

import typer

from unbottle.api.accuracy import evaluate
from unbottle.cli.common import (
    AllowPickleOpt,
    JsonOpt,
    QuietOpt,
    ThreadsOpt,
    handle_errors,
)
from unbottle.cli.show import show_run
from unbottle.evaluation import EvalConfig
from unbottle.reporting.progress import Progress
from unbottle.store import Store

EXAMPLES = """
Examples:

  unbottle eval smollm2-135m --threads 1 --json

  unbottle eval smollm2-135m --eval-text book.txt --eval-tokens 8192 --task sports_understanding

  unbottle eval ./quantized-model --reference smollm2-135m
"""


@handle_errors
def eval_(
    model: Annotated[str, typer.Argument(help="Model name, HF folder or .gguf file.")] = "smollm2-135m",
    eval_text: Annotated[
        str | None, typer.Option(help="UTF-8 text file or folder [default: packaged Persuasion].")
    ] = None,
    eval_tokens: Annotated[int, typer.Option(help="Token budget for perplexity.")] = 16384,
    window: Annotated[int, typer.Option(help="Perplexity window (tokens).")] = 512,
    stride: Annotated[
        int | None, typer.Option(help="Perplexity stride (tokens) [default: --window].")
    ] = None,
    task: Annotated[str | None, typer.Option(help="BIG-bench task name or task.json path.")] = None,
    max_items: Annotated[int, typer.Option(help="Items evaluated from the task (seeded subset).")] = 200,
    length_normalize: Annotated[bool, typer.Option(help="Score options per token.")] = False,
    reference: Annotated[
        str | None, typer.Option(help="Reference model for KL/top-1/greedy agreement.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward.")] = 4,
    threads: ThreadsOpt = None,
    allow_pickle: AllowPickleOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate accuracy with per-sample scores (windows, items), stored for paired comparisons."""
    config = EvalConfig(
        eval_text=eval_text,
        eval_tokens=eval_tokens,
        window=window,
        stride=window if stride is None else stride,
        task=task,
        max_items=max_items,
        length_normalize=length_normalize,
        reference=reference,
        batch_size=batch_size,
    )
    store = Store()
    with Progress(quiet) as progress:
        doc = evaluate(
            model, config, threads=threads, store=store, progress=progress, allow_pickle=allow_pickle
        )
    show_run(store, doc["run_id"], json_, doc)
