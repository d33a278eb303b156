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
    stderr_say,
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
    import dataclasses
    import os

    from unbottle.benchmarking import apply_threads
    from unbottle.core.env import manifest
    from unbottle.store import Store
    from unbottle.training.loader import LoaderConfig
    from unbottle.training.session import run_training
    from unbottle.training.spec import TrainSpec
    from unbottle.training.trainer import TrainConfig

    argv = _argv(locals())  # the same command for each worker under --nproc
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} given; allowed: 1 or more")
    if data_mode not in ("cache", "on-the-fly"):
        raise ConfigError(f"--data-mode {data_mode!r} given; allowed: cache, on-the-fly")
    cfg = TrainConfig(
        max_steps=max_steps,
        grad_accum=grad_accum,
        lr=lr,
        warmup_steps=max(1, max_steps // 10),
        precision=precision,
        loss=loss,
        compile=compile_,
        checkpointing=checkpointing,
        parallel=parallel,
        device=device,
        checkpoint_every=checkpoint_every,
        eval_every=eval_every,
    )
    auto = batch_size.strip().lower() == "auto"
    if not auto and not batch_size.strip().isdigit():
        raise ConfigError(f"--batch-size {batch_size!r} given; allowed: a positive integer or auto")
    loader = LoaderConfig(batch_size=1 if auto else int(batch_size), workers=workers)
    batching = {"auto": auto, "global": global_batch, "budget_mib": memory_budget}
    run_dir = output or Path("trained") / Path(model.rstrip("/")).name
    if (run_dir / "latest").exists() and not resume:
        raise ConfigError(f"{run_dir} holds checkpoints; pass --resume to continue them or choose another -o")
    spec = TrainSpec(model, data, seq_len, data_mode, cfg, loader, run_dir, resume)
    if compare is not None:
        _compare(spec, compare, rounds, segment_steps, threads, json_, quiet)
        return
    from unbottle.training.distributed import init_from_env, launch, rank_device

    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # options checked above, once, before launching
        raise typer.Exit(launch(nproc, argv))
    rank, world = init_from_env(cfg.device)
    spec = dataclasses.replace(spec, train=dataclasses.replace(cfg, device=rank_device(cfg.device)))
    settings = apply_threads(threads)
    say = stderr_say(quiet or bool(rank))
    quiet_saves(quiet or bool(rank))
    if rank:
        run_training(spec, say, None, rank, world, batching)
        return
    store = Store()
    from unbottle.profiling.peaks import cached_peaks

    peaks = cached_peaks(store, settings["torch_num_threads"])  # for MFU; measured once per machine
    from unbottle.cli.progress import Progress

    with (
        Progress(quiet) as progress,  # only rank 0 gets here: the other ranks show nothing
        store.recording("train", model, spec.stored(), manifest(seed=cfg.seed)) as run,
    ):
        result = run_training(spec, say, peaks, 0, world, batching, progress)
        for m in result.pop("measurements"):
            run.add(m)
        run.complete({**result, "threads": settings})
    for shown in views.training(result):
        out.print(shown)
    if json_:
        print_json({"run_id": run.id, "kind": "train", **result, "threads": settings})


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


def _compare(spec: Any, text: str, rounds: int, steps: int, threads: Any, json_: bool, quiet: bool) -> None:
    import dataclasses

    from unbottle.benchmarking import apply_threads
    from unbottle.core.env import manifest
    from unbottle.store import Store
    from unbottle.training.compare import parse_strategies
    from unbottle.training.session import run_compare

    names = parse_strategies(text)
    if rounds < 2 or steps < 1:
        raise ConfigError(
            f"--rounds {rounds} / --segment-steps {steps} given; allowed: rounds >= 2, steps >= 1"
        )
    spec = dataclasses.replace(
        spec, train=dataclasses.replace(spec.train, max_steps=10**9, warmup_steps=max(1, steps))
    )
    settings = apply_threads(threads)
    say = stderr_say(quiet)
    store = Store()
    config = {
        "model": spec.model,
        "data": spec.data,
        "seq_len": spec.seq_len,
        "compare": names,
        "rounds": rounds,
        "segment_steps": steps,
    }
    from unbottle.cli.progress import Progress

    with store.recording("train", spec.model, config, manifest()) as run, Progress(quiet) as progress:
        result = run_compare(spec, names, rounds, steps, say, progress)
        run.complete({**result, "threads": settings})
    out.print(views.compare_table(result["compare"]))
    if json_:
        print_json({"run_id": run.id, "kind": "train", **result, "threads": settings})
