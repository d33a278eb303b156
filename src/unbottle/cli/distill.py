"""``unbottle distill``: distil a causal LM into a smaller student and measure what distillation gained."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unbottle.cli.common import JsonOpt, QuietOpt, ThreadsOpt, handle_errors, out, print_json, quiet_saves
from unbottle.reporting import views

EXAMPLES = """
Examples:

  unbottle distill smollm2-135m --student half --max-steps 100 -o distilled/smol-half

  unbottle distill smollm2-135m --student layers=10,intermediate=1024 --precision bf16

  unbottle distill my-teacher/ --student my-small-model/ --data texts/ --no-baseline
"""


@handle_errors
def distill(
    teacher: Annotated[str, typer.Argument(help="Teacher model spec (a causal LM).")],
    student: Annotated[
        str,
        typer.Option(
            help="half | layers=N[,intermediate=M] (built from the teacher's layers) | a model spec."
        ),
    ] = "half",
    data: Annotated[
        str | None, typer.Option(help="Text file or folder of .txt [default: packaged Austen].")
    ] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per sample.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Samples per micro-batch.")] = 8,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimiser step.")] = 1,
    max_steps: Annotated[int, typer.Option(help="Optimiser steps (each run).")] = 100,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    alpha: Annotated[float, typer.Option(help="Weight of the KL term (1 - alpha: cross-entropy).")] = 0.5,
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the KL term.")] = 2.0,
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    baseline: Annotated[
        bool, typer.Option(help="Also train the same student without distillation (the measured gain).")
    ] = True,
    eval_text: Annotated[
        str | None, typer.Option(help="Held-out text file or folder [default: packaged Persuasion].")
    ] = None,
    eval_tokens: Annotated[int, typer.Option(help="Held-out tokens for perplexity.")] = 8192,
    window: Annotated[int, typer.Option(help="Perplexity window (tokens).")] = 512,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N steps (0: at the end).")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue both runs from their last checkpoints.")] = False,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Distil TEACHER into a smaller student; measure the gain against the same student without it.

    Loss: KL on temperature-softened logits + cross-entropy. Held-out perplexity of the teacher, the
    distilled student and the plain student, on the same windows, with paired CIs.
    """
    from unbottle.api import distill as distill_verb
    from unbottle.cli.progress import Progress
    from unbottle.training.settings import DistillRun

    settings = DistillRun(
        student=student, data=data, seq_len=seq_len, batch_size=batch_size, grad_accum=grad_accum,
        max_steps=max_steps, lr=lr, alpha=alpha, temperature=temperature, precision=precision,
        baseline=baseline, eval_text=eval_text, eval_tokens=eval_tokens, window=window,
        checkpoint_every=checkpoint_every, output=str(output) if output else None, resume=resume,
    )  # fmt: skip
    quiet_saves(quiet)
    with Progress(quiet) as progress:
        doc = distill_verb(teacher, settings, threads=threads, progress=progress)
    out.print(views.distill_table(doc))
    if json_:
        print_json(doc)
