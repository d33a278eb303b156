"""``unbottle distill``: distil a causal LM into a smaller student and measure what distillation gained."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unbottle.cli.common import (
    JsonOpt,
    QuietOpt,
    ThreadsOpt,
    handle_errors,
    out,
    print_json,
    quiet_saves,
    stderr_say,
)
from unbottle.core.errors import ConfigError
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
    import dataclasses

    from unbottle.benchmarking import apply_threads
    from unbottle.core.env import manifest
    from unbottle.store import Store
    from unbottle.training.distillation import DistillSettings, run_distill
    from unbottle.training.loader import LoaderConfig
    from unbottle.training.spec import TrainSpec
    from unbottle.training.trainer import TrainConfig

    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision {precision!r} given; allowed: fp32, bf16")
    cfg = TrainConfig(max_steps=max_steps, grad_accum=grad_accum, lr=lr, precision=precision,
                      warmup_steps=max(1, max_steps // 10), checkpoint_every=checkpoint_every)  # fmt: skip
    loader = LoaderConfig(batch_size=batch_size)
    settings = DistillSettings(student, alpha, temperature, baseline, eval_text, eval_tokens, window)
    run_dir = output or Path("distilled") / Path(teacher.rstrip("/")).name
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise ConfigError(f"{run_dir} is not empty; pass --resume to continue it or choose another -o")
    threads_used = apply_threads(threads)
    say = stderr_say(quiet)
    quiet_saves(quiet)
    store = Store()
    config = {"teacher": teacher, "data": data, "seq_len": seq_len, "train": cfg.to_dict(),
              "loader": loader.to_dict(), "distill": dataclasses.asdict(settings),
              "output": str(run_dir)}  # fmt: skip
    from unbottle.cli.progress import Progress

    with (
        Progress(quiet) as progress,
        store.recording("distill", teacher, config, manifest(seed=cfg.seed)) as run,
    ):
        spec = TrainSpec(teacher, data, seq_len, "cache", cfg, loader, run_dir, resume)
        result = run_distill(spec, settings, say, progress)
        for m in result.pop("measurements"):
            run.add(m)
        run.complete({**result, "threads": threads_used})
    out.print(views.distill_table(result))
    if json_:
        print_json({"run_id": run.id, "kind": "distill", **result, "threads": threads_used})
