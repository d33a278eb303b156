"""A training run end to end (what ``unbottle train`` records): data, trainer, validation, the saved
model, its summary and measurements; and the strategy A/B (``--compare``)."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import psutil
from torch.utils.data import Subset

from unbottle.benchmarking.tracker import ResourceTracker
from unbottle.core.errors import ConfigError
from unbottle.core.measurement import Measurement
from unbottle.core.naming import given, opt
from unbottle.models import resolve
from unbottle.sources.base import check_length, count_parameters, require_causal_lm
from unbottle.training.batch_finder import accumulation, agree, find_micro_batch
from unbottle.training.checkpoint import full_model_state
from unbottle.training.compare import compare_strategies
from unbottle.training.data import OnTheFlyDataset, TokenDataset, corpus_at, default_corpora, token_cache
from unbottle.training.diagnose import diagnose
from unbottle.training.spec import TrainSpec
from unbottle.training.trainer import Trainer

TRAIN_PURPOSE = "unbottle train trains causal language models"


def datasets(data: str | None, seq_len: int, data_mode: str, tokenizer: Any) -> tuple[Any, Any]:
    """(train, validation) datasets: the packaged Austen split, or the last tenth of ``data``'s windows."""
    if data is None:
        train_corpus, val_corpus = default_corpora()
        val = TokenDataset(token_cache(val_corpus, tokenizer, seq_len)[0], seq_len)
    else:
        train_corpus, val_corpus = corpus_at(data), None
    train = TokenDataset(token_cache(train_corpus, tokenizer, seq_len)[0], seq_len)
    if val_corpus is None:
        cut = max(1, len(train) // 10)
        val, train = (
            Subset(train, range(len(train) - cut, len(train))),
            Subset(train, range(len(train) - cut)),
        )
    if data_mode == "on-the-fly":
        train = OnTheFlyDataset(train_corpus, tokenizer, seq_len, n_items=len(train))
    return train, val


def load_trainable(spec: str, purpose: str) -> Any:
    """A causal LM with its tokenizer, or a clear error."""
    loaded = require_causal_lm(resolve(spec).load(), spec, purpose)
    if loaded.tokenizer is None:
        raise ConfigError(f"{spec!r} has no tokenizer; give a model folder with tokenizer files")
    return loaded


def run_training(
    spec: TrainSpec,
    say: Any,
    peaks: Any,
    rank: int = 0,
    world: int = 1,
    batching: dict[str, Any] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Train, validate and save; ``peaks`` (measured machine peaks) give the MFU; ``rank``/``world``
    place this process in a distributed run; ``batching``: ``--batch-size auto`` and
    ``--global-batch``; ``progress`` (a ``reporting.progress.Progress``) draws the steps."""
    say(f"loading {spec.model} …")
    loaded = load_trainable(spec.model, TRAIN_PURPOSE)
    check_length(loaded, spec.seq_len, given("seq_len", spec.seq_len), f"lower {opt('seq_len')}")
    say("preparing data (tokenised once, then cached) …")
    train_ds, val_ds = datasets(spec.data, spec.seq_len, spec.data_mode, loaded.tokenizer)
    cfg, loader, found = _batching(
        loaded.model, spec.seq_len, spec.train, spec.loader, world, batching or {}, say, len(train_ds)
    )
    run_dir = spec.output
    trainer = Trainer(loaded.model, train_ds, cfg, loader, run_dir, rank, world)
    resumed_from = trainer.step if spec.resume and trainer.resume() else 0
    if spec.resume and not resumed_from:
        say(f"no checkpoint in {run_dir}: starting from step 0")
    validation = []
    steps = steps_task(progress, "training", cfg.max_steps, trainer.step)
    with ResourceTracker() as tracker:
        while trainer.step < cfg.max_steps:
            chunk = cfg.eval_every or cfg.max_steps
            trainer.train(steps=chunk - trainer.step % chunk, on_step=steps)
            validation.append(trainer.evaluate(val_ds, cfg.eval_batches, loader.batch_size))
            say(f"step {trainer.step}/{cfg.max_steps}: validation loss {validation[-1]['val_loss']:.3f}")
    model_dir = run_dir / "model"

    trainer.save()  # every rank joins (FSDP gathers the full state); rank 0 writes
    state = full_model_state(trainer) if trainer.sharded is not None else None
    if rank:
        return {}
    loaded.model.save_pretrained(model_dir, state_dict=state)
    loaded.tokenizer.save_pretrained(model_dir)

    result = _result(trainer, loaded, validation, tracker, resumed_from, model_dir, cfg, peaks)
    return {
        **result,
        "diagnosis": diagnose(result["summary"], cfg, spec.data_mode, loader.workers),
        "world": world,
        "micro_batch": loader.batch_size,
        "grad_accum": cfg.grad_accum,
        "batch_finder": found,
    }


def steps_task(progress: Any, label: str, max_steps: int, done: int) -> Any:
    """An ``on_step`` for ``Trainer.train`` that advances a bar over ``max_steps`` (None: no display)."""
    if progress is None:
        return None
    task = progress.task(label, max_steps, "steps", completed=done)
    return lambda record: task.advance(note=f"loss {record['loss']:.3f}")


def _result(
    trainer: Any,
    loaded: Any,
    validation: list[dict[str, Any]],
    tracker: Any,
    resumed_from: int,
    model_dir: Path,
    cfg: Any,
    peaks: Any,
) -> dict[str, Any]:

    steps = [r for r in trainer.history if r["step"] > resumed_from] or trainer.history
    parts = ("data_s", "forward_s", "backward_s", "optimizer_s")
    wall = sum(r["wall_s"] for r in steps)
    breakdown = {k: sum(r[k] for r in steps) / wall for k in parts}
    breakdown["other_s"] = max(0.0, 1 - sum(breakdown.values()))
    dtype = {"bf16": "bfloat16", "bf16-pure": "bfloat16", "fp16": "float16"}.get(cfg.precision, "float32")
    tps = statistics.median(r["tokens_per_s"] for r in steps)
    params = count_parameters(loaded.model)
    peak = (
        peaks.matmul_gflops.get(dtype, peaks.matmul_gflops["float32"]) * trainer.world
    )  # every rank's cores
    summary = {
        "steps": trainer.step,
        "tokens_per_s": tps,
        "step_s": statistics.median(r["wall_s"] for r in steps),
        "breakdown": breakdown,
        "first_loss": trainer.history[0]["loss"],
        "last_loss": trainer.history[-1]["loss"],
        "mfu": 6 * params * tps / (peak * 1e9),  # forward + backward ≈ 6 FLOPs per parameter per token
        "peak_gflops": peak,
        "peak_dtype": dtype,
        "peak_rss_mib": tracker.peak_rss_bytes / 2**20,
    }
    if any("comm_s" in r for r in steps):
        summary["comm_share"] = sum(r.get("comm_s", 0.0) for r in steps) / wall
    measurements = [
        Measurement(f"train.{k}", "s" if k.endswith("_s") else "", [r[k] for r in steps], False, "train", {})
        for k in ("wall_s", *parts, "loss")
    ] + [Measurement("train.tokens_per_s", "tokens/s", [r["tokens_per_s"] for r in steps], True, "train", {})]
    return {
        "summary": summary,
        "validation": validation,
        "history": trainer.history,
        "resumed_from": resumed_from,
        "model_dir": str(model_dir),
        "model": loaded.info.to_dict(),
        "measurements": measurements,
    }


def run_compare(
    spec: TrainSpec, names: list[str], rounds: int, steps: int, say: Any, progress: Any = None
) -> dict[str, Any]:
    """Strategy A/B (``--compare``): ``rounds`` interleaved segments of ``steps`` steps per strategy, all
    from the same starting state."""
    loaded = require_causal_lm(resolve(spec.model).load(), spec.model, TRAIN_PURPOSE)
    say("preparing data for both pipelines …")
    cached, _ = datasets(spec.data, spec.seq_len, "cache", loaded.tokenizer)
    naive, _ = datasets(spec.data, spec.seq_len, "on-the-fly", loaded.tokenizer)
    say(f"comparing {', '.join(names)}: {rounds} rounds of {steps} steps each …")
    on_segment = None
    if progress is not None:
        task = progress.task("strategy A/B", rounds * len(names), "segments")
        on_segment = lambda name: task.advance(note=name)  # noqa: E731
    pipelines = {"cache": cached, "on-the-fly": naive}
    doc = compare_strategies(loaded.model, pipelines, names, spec, rounds, steps, on_segment)
    return {"compare": doc, "model": loaded.info.to_dict()}


def _batching(
    model: Any,
    seq_len: int,
    cfg: Any,
    loader: Any,
    world: int,
    batching: dict[str, Any],
    say: Any,
    samples: int,
) -> tuple[Any, Any, Any]:
    """Apply ``--batch-size auto`` and ``--global-batch``: (train config, loader config, finder result)."""
    found = None
    micro = loader.batch_size
    if batching.get("auto"):
        extra = (
            batching["budget_mib"] * 2**20
            if batching.get("budget_mib")
            else 0.8 * psutil.virtual_memory().available
        )
        budget = psutil.Process().memory_info().rss + extra  # the step may add this to what is loaded
        found = find_micro_batch(model, seq_len, budget, cfg.precision)
        micro = agree(min(found["batch"], max(1, samples // world)), world)  # no larger than the data
        say(
            f"batch-size finder: micro-batch {micro} fits {budget / 2**20:.0f} MiB "
            f"(measured at {sorted(found['measured'])})"
        )
    accum = accumulation(batching.get("global"), micro, world) if batching.get("global") else cfg.grad_accum
    return dataclasses.replace(cfg, grad_accum=accum), dataclasses.replace(loader, batch_size=micro), found
