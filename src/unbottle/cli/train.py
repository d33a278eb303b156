"""``unbottle train``: a causal-LM training run with its step-time breakdown (single process, for now)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from unbottle.api import train as train_verb
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
from unbottle.reporting.progress import Progress
from unbottle.training.distributed import launch
from unbottle.training.settings import TrainSettings

EXAMPLES = """
Examples:

  unbottle train tiny-llama --max-steps 50 --json              # from scratch on the packaged Austen novels

  unbottle train smollm2-135m --data my-texts/ --seq-len 256 --precision bf16 -o smol-ft

  unbottle train tiny-llama -o runs/t1 --resume                 # continue from the last checkpoint
"""


_Model = Annotated[
    str, typer.Argument(help="Model spec: a tiny config to train from scratch, or a real model.")
]
_Data = Annotated[str | None, typer.Option(help="Text file or folder of .txt [default: packaged Austen].")]
_SeqLen = Annotated[int, typer.Option(help="Tokens per sample.")]
_BatchSize = Annotated[str, typer.Option(help="Samples per micro-batch, or auto (largest that fits).")]
_GlobalBatch = Annotated[int | None, typer.Option(help="Samples per optimiser step (sets accumulation).")]
_MemoryBudget = Annotated[
    float | None,
    typer.Option(
        help="MiB a step may add to the loaded model, for --batch-size auto [default: 80% of free]."
    ),
]
_GradAccum = Annotated[int, typer.Option(help="Micro-batches per optimiser step.")]
_MaxSteps = Annotated[int, typer.Option(help="Optimiser steps.")]
_Lr = Annotated[float, typer.Option(help="Peak learning rate.")]
_Precision = Annotated[
    str, typer.Option(help="fp32, bf16 (autocast), bf16-pure, or fp16 (GPU, loss scaling).")
]
_Loss = Annotated[
    str, typer.Option(help="full; chunked (output layer in chunks); fused (+ its gradient, fastest).")
]
_Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model and loss.")]
_Checkpointing = Annotated[
    bool, typer.Option(help="Activation checkpointing: recompute activations in backward.")
]
_Parallel = Annotated[str, typer.Option(help="With --nproc > 1: ddp or fsdp.")]
_Device = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
_DataMode = Annotated[str, typer.Option(help="cache (tokenise once) or on-the-fly (naive).")]
_Workers = Annotated[int, typer.Option(help="DataLoader workers.")]
_EvalEvery = Annotated[int, typer.Option(help="Validate every N steps (0: at the end only).")]
_CheckpointEvery = Annotated[int, typer.Option(help="Checkpoint every N steps (0: at the end only).")]
_Output = Annotated[Path | None, typer.Option("--output", "-o", help="Run folder (checkpoints, model).")]
_Resume = Annotated[bool, typer.Option(help="Continue from the last checkpoint in the run folder.")]
_Nproc = Annotated[int, typer.Option(help="Processes (DDP through torchrun; gloo on CPU).")]
_Compare = Annotated[str | None, typer.Option(help="Strategy A/B, e.g. naive,base,bf16 (first = reference).")]
_Rounds = Annotated[int, typer.Option(help="Rounds of the strategy A/B.")]
_SegmentSteps = Annotated[int, typer.Option(help="Steps per strategy per round in the A/B.")]


@handle_errors
def train(
    model: _Model,
    data: _Data = None,
    seq_len: _SeqLen = 128,
    batch_size: _BatchSize = "8",
    global_batch: _GlobalBatch = None,
    memory_budget: _MemoryBudget = None,
    grad_accum: _GradAccum = 1,
    max_steps: _MaxSteps = 50,
    lr: _Lr = 3e-4,
    precision: _Precision = "fp32",
    loss: _Loss = "full",
    compile_: _Compile = False,
    checkpointing: _Checkpointing = False,
    parallel: _Parallel = "ddp",
    device: _Device = "cpu",
    data_mode: _DataMode = "cache",
    workers: _Workers = 0,
    eval_every: _EvalEvery = 0,
    checkpoint_every: _CheckpointEvery = 0,
    output: _Output = None,
    resume: _Resume = False,
    nproc: _Nproc = 1,
    compare: _Compare = None,
    rounds: _Rounds = 3,
    segment_steps: _SegmentSteps = 5,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train MODEL; report tokens/s, where each step's time went, validation loss and MFU."""
    argv = _argv(locals())  # the same command for each worker under --nproc
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} given; allowed: 1 or more")
    settings = _settings(locals())
    settings.spec(model)  # a run folder with checkpoints not resumed: refused before launching
    if nproc > 1 and compare is None and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(launch(nproc, argv))  # options checked above, once, before launching
    rank = int(os.environ.get("RANK", "0"))
    quiet_saves(quiet or bool(rank))

    with Progress(quiet or bool(rank)) as progress:  # only rank 0 shows and prints
        doc = train_verb(model, settings, threads=threads, progress=progress)
    if not rank:
        for part in [views.compare_table(doc["compare"])] if compare is not None else views.training(doc):
            out.print(part)
        if json_:
            print_json(doc)


def _settings(params: dict[str, Any]) -> Any:
    """The command's options as the verb's ``TrainSettings`` (same names, but for these four)."""
    same = {f.name: params[f.name] for f in dataclasses.fields(TrainSettings) if f.name in params}
    compare = params["compare"]
    return TrainSettings(**{
        **same,
        "compile": params["compile_"],
        "batch_size": _batch_size(params["batch_size"]),
        "output": str(params["output"]) if params["output"] else None,
        "compare": str_list(compare) if compare is not None else None,
    })  # fmt: skip


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
