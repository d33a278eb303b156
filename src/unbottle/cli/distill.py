"""``unbottle distill``: distil a causal LM into a smaller student and measure what distillation gained."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unbottle.api import distill as distill_verb
from unbottle.cli.common import JsonOpt, QuietOpt, ThreadsOpt, handle_errors, out, print_json, quiet_saves
from unbottle.reporting import views
from unbottle.reporting.progress import Progress
from unbottle.training.settings import DistillRun

EXAMPLES = """
Examples:

  unbottle distill smollm2-135m --student half --max-steps 100 -o distilled/smol-half

  unbottle distill smollm2-135m --student layers=10,intermediate=1024 --precision bf16

  unbottle distill my-teacher/ --student my-small-model/ --data texts/ --no-baseline
"""


_Teacher = Annotated[str, typer.Argument(help="Teacher model spec (a causal LM).")]
_Student = Annotated[
    str,
    typer.Option(help="half | layers=N[,intermediate=M] (built from the teacher's layers) | a model spec."),
]
_Data = Annotated[str | None, typer.Option(help="Text file or folder of .txt [default: packaged Austen].")]
_SeqLen = Annotated[int, typer.Option(help="Tokens per sample.")]
_BatchSize = Annotated[int, typer.Option(help="Samples per micro-batch.")]
_GradAccum = Annotated[int, typer.Option(help="Micro-batches per optimiser step.")]
_MaxSteps = Annotated[int, typer.Option(help="Optimiser steps (each run).")]
_Lr = Annotated[float, typer.Option(help="Peak learning rate.")]
_Alpha = Annotated[float, typer.Option(help="Weight of the KL term (1 - alpha: cross-entropy).")]
_Temperature = Annotated[float, typer.Option(help="Softmax temperature of the KL term.")]
_Precision = Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")]
_Baseline = Annotated[
    bool, typer.Option(help="Also train the same student without distillation (the measured gain).")
]
_EvalText = Annotated[
    str | None, typer.Option(help="Held-out text file or folder [default: packaged Persuasion].")
]
_EvalTokens = Annotated[int, typer.Option(help="Held-out tokens for perplexity.")]
_Window = Annotated[int, typer.Option(help="Perplexity window (tokens).")]
_CheckpointEvery = Annotated[int, typer.Option(help="Checkpoint every N steps (0: at the end).")]
_Output = Annotated[Path | None, typer.Option("--output", "-o", help="Run folder.")]
_Resume = Annotated[bool, typer.Option(help="Continue both runs from their last checkpoints.")]


@handle_errors
def distill(
    teacher: _Teacher,
    student: _Student = "half",
    data: _Data = None,
    seq_len: _SeqLen = 128,
    batch_size: _BatchSize = 8,
    grad_accum: _GradAccum = 1,
    max_steps: _MaxSteps = 100,
    lr: _Lr = 3e-4,
    alpha: _Alpha = 0.5,
    temperature: _Temperature = 2.0,
    precision: _Precision = "fp32",
    baseline: _Baseline = True,
    eval_text: _EvalText = None,
    eval_tokens: _EvalTokens = 8192,
    window: _Window = 512,
    checkpoint_every: _CheckpointEvery = 0,
    output: _Output = None,
    resume: _Resume = False,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Distil TEACHER into a smaller student; measure the gain against the same student without it.

    Loss: KL on temperature-softened logits + cross-entropy. Held-out perplexity of the teacher, the
    distilled student and the plain student, on the same windows, with paired CIs.
    """
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
