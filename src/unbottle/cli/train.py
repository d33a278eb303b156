"""``unbottle train``: a causal-LM training run with its step-time breakdown (single process, for now)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from unbottle.cli.common import (
    JsonOpt,
    QuietOpt,
    ThreadsOpt,
    handle_errors,
    out,
    print_json,
    quiet_saves,
    str_list,
)
from unbottle.core.errors import ConfigError
from unbottle.reporting import views

EXAMPLES = """
Examples:

  unbottle train tiny-llama --max-steps 50 --json              # from scratch on the packaged Austen novels

  unbottle train smollm2-135m --data my-texts/ --seq-len 256 --precision bf16 -o smol-ft

  unbottle train tiny-llama -o runs/t1 --resume                 # continue from the last checkpoint
"""


@handle_errors
def train(
    model: Annotated[
        str, typer.Argument(help="Model spec: a tiny config to train from scratch, or a real model.")
    ],
    data: Annotated[
        str | None, typer.Option(help="Text file or folder of .txt [default: packaged Austen].")
    ] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per sample.")] = 128,
    batch_size: Annotated[
        str, typer.Option(help="Samples per micro-batch, or auto (largest that fits).")
    ] = "8",
    global_batch: Annotated[
        int | None, typer.Option(help="Samples per optimiser step (sets accumulation).")
    ] = None,
    memory_budget: Annotated[
        float | None,
        typer.Option(
            help="MiB a step may add to the loaded model, for --batch-size auto [default: 80% of free]."
        ),
    ] = None,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimiser step.")] = 1,
    max_steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 50,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    precision: Annotated[
        str, typer.Option(help="fp32, bf16 (autocast), bf16-pure, or fp16 (GPU, loss scaling).")
    ] = "fp32",
    loss: Annotated[
        str,
        typer.Option(help="full; chunked (output layer in chunks); fused (+ its gradient, fastest)."),
    ] = "full",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model and loss.")] = False,
    checkpointing: Annotated[
        bool, typer.Option(help="Activation checkpointing: recompute activations in backward.")
    ] = False,
    parallel: Annotated[str, typer.Option(help="With --nproc > 1: ddp or fsdp.")] = "ddp",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    data_mode: Annotated[str, typer.Option(help="cache (tokenise once) or on-the-fly (naive).")] = "cache",
    workers: Annotated[int, typer.Option(help="DataLoader workers.")] = 0,
    eval_every: Annotated[int, typer.Option(help="Validate every N steps (0: at the end only).")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N steps (0: at the end only).")] = 0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Run folder (checkpoints, model).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the last checkpoint in the run folder.")
    ] = False,
    nproc: Annotated[int, typer.Option(help="Processes (DDP through torchrun; gloo on CPU).")] = 1,
    compare: Annotated[
        str | None, typer.Option(help="Strategy A/B, e.g. naive,base,bf16 (first = reference).")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Rounds of the strategy A/B.")] = 3,
    segment_steps: Annotated[int, typer.Option(help="Steps per strategy per round in the A/B.")] = 5,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train MODEL; report tokens/s, where each step's time went, validation loss and MFU."""
    import os

    from unbottle.api import train as train_verb
    from unbottle.training.settings import TrainSettings

    argv = _argv(locals())  # the same command for each worker under --nproc
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} given; allowed: 1 or more")
    settings = TrainSettings(
        data=data, seq_len=seq_len, batch_size=_batch_size(batch_size), global_batch=global_batch,
        memory_budget=memory_budget, grad_accum=grad_accum, max_steps=max_steps, lr=lr,
        precision=precision, loss=loss, compile=compile_, checkpointing=checkpointing, parallel=parallel,
        device=device, data_mode=data_mode, workers=workers, eval_every=eval_every,
        checkpoint_every=checkpoint_every, output=str(output) if output else None, resume=resume,
        compare=str_list(compare) if compare is not None else None, rounds=rounds,
        segment_steps=segment_steps,
    )  # fmt: skip
    settings.spec(model)  # a run folder with checkpoints not resumed: refused before launching
    if nproc > 1 and compare is None and "WORLD_SIZE" not in os.environ:
        from unbottle.training.distributed import launch

        raise typer.Exit(launch(nproc, argv))  # options checked above, once, before launching
    rank = int(os.environ.get("RANK", "0"))
    quiet_saves(quiet or bool(rank))
    from unbottle.cli.progress import Progress

    with Progress(quiet or bool(rank)) as progress:  # only rank 0 shows and prints
        doc = train_verb(model, settings, threads=threads, progress=progress)
    if rank:
        return
    shown = views.compare_table(doc["compare"]) if compare is not None else views.training(doc)
    for part in shown if isinstance(shown, list) else [shown]:
        out.print(part)
    if json_:
        print_json(doc)


def _batch_size(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    if not text.strip().isdigit():
        raise ConfigError(f"--batch-size {text!r} given; allowed: a positive integer or auto")
    return int(text)


_FLAGS = {
    "data": "--data", "seq_len": "--seq-len", "batch_size": "--batch-size", "grad_accum": "--grad-accum",
    "max_steps": "--max-steps", "lr": "--lr", "precision": "--precision", "data_mode": "--data-mode",
    "workers": "--workers", "eval_every": "--eval-every", "checkpoint_every": "--checkpoint-every",
    "output": "--output", "threads": "--threads", "global_batch": "--global-batch", "loss": "--loss",
    "memory_budget": "--memory-budget", "parallel": "--parallel", "device": "--device",
}  # fmt: skip


def _argv(params: dict[str, Any]) -> list[str]:
    """The same ``train`` command for each worker process (``--nproc`` left out)."""
    argv = ["train", params["model"]]
    for name, flag in _FLAGS.items():
        if params.get(name) is not None:
            argv += [flag, str(params[name])]
    argv += [
        flag
        for flag, on in (
            ("--resume", params["resume"]),
            ("--compile", params["compile_"]),
            ("--checkpointing", params["checkpointing"]),
            ("--json", params["json_"]),
            ("--quiet", params["quiet"]),
        )
        if on
    ]
    return argv
