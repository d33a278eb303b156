"""``unbottle eval``: perplexity, multiple-choice accuracy and agreement with a reference model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from unbottle.cli.common import (
    AllowPickleOpt,
    JsonOpt,
    QuietOpt,
    ThreadsOpt,
    handle_errors,
    recorded_run,
)

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
    from unbottle.benchmarking import apply_threads
    from unbottle.core.env import manifest
    from unbottle.evaluation import EvalConfig, evaluate
    from unbottle.sources import resolve
    from unbottle.store import Store

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
    source = resolve(model, allow_pickle=allow_pickle)
    ref_source = resolve(reference, allow_pickle=allow_pickle) if reference else None
    threads_in_force = apply_threads(threads)
    from unbottle.cli.progress import Progress

    with Progress(quiet) as progress:
        progress.message(f"loading {source.describe()} …")
        loaded = source.load()
        ref = ref_source.load() if ref_source else None
        store = Store()
        with recorded_run(store, "eval", model, config.to_dict(), manifest()) as run_id:
            progress.message("evaluating …")
            results = evaluate(loaded, config, ref, progress=progress.evaluations())
            for r in results:
                store.add_measurement(run_id, r.to_measurement())
    summary: dict[str, Any] = {
        "model": loaded.info.to_dict(),
        "threads": threads_in_force,
        "evals": [r.to_dict() for r in results],
        "notes": loaded.info.notes,
    }
    store.finish_run(run_id, "complete", result=summary)
    from unbottle.cli.show import show_run

    show_run(store, run_id, json_)
