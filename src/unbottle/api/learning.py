"""``unbottle.train`` and ``unbottle.distill``: training runs with their step-time breakdown, and a
distillation measured against the same student trained without it."""

from __future__ import annotations

import dataclasses
from typing import Any

from unbottle.api._common import Silent, config_of, store_of
from unbottle.benchmarking import apply_threads
from unbottle.core.env import manifest
from unbottle.profiling.peaks import cached_peaks
from unbottle.training.compare import parse_strategies
from unbottle.training.distillation import DistillSettings, run_distill
from unbottle.training.distributed import init_from_env, rank_device
from unbottle.training.session import run_compare, run_training
from unbottle.training.settings import DistillRun, TrainSettings


def train(
    model: str,
    config: Any = None,
    *,
    threads: int | None = None,
    store: Any = None,
    progress: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train ``model`` (or A/B training strategies on it) and record the run; return what
    ``train --json`` prints (``summary``, ``validation``, ``diagnosis``, ... or ``compare``).

    Args:
        model: a tiny config to train from scratch (``tiny-llama``), or a real model.
        config: a ``training.TrainSettings``; or its fields as keyword arguments (``max_steps=50``,
            ``precision="bf16"``, ``compare=("naive", "base")``, ``output="runs/t1"``, ...).
        threads: torch threads; default the physical cores.
        store, progress: the store to record in (default ``$UNBOTTLE_HOME``) and a progress display
            (``reporting.progress.Progress``; default none).

    Under ``torchrun`` (``WORLD_SIZE`` set) each process calls this; only rank 0 records and returns
    the document, the others return ``{}``.
    """
    config = config_of(TrainSettings, config, settings)
    spec = config.spec(model)
    progress = progress or Silent()
    if config.compare is not None:
        return _strategies(spec, config, apply_threads(threads), store_of(store), progress)

    rank, world = init_from_env(spec.train.device)
    spec = dataclasses.replace(
        spec, train=dataclasses.replace(spec.train, device=rank_device(spec.train.device))
    )
    in_force = apply_threads(threads)
    if rank:
        run_training(spec, lambda _m: None, None, rank, world, config.batching())
        return {}
    store = store_of(store)
    peaks = cached_peaks(store, in_force["torch_num_threads"])  # for MFU; measured once per machine
    with store.recording("train", model, spec.stored(), manifest(seed=spec.train.seed)) as run:
        result = run_training(spec, progress.message, peaks, 0, world, config.batching(), progress)
        for m in result.pop("measurements"):
            run.add(m)
        run.complete({**result, "threads": in_force})
    return {"run_id": run.id, "kind": "train", **result, "threads": in_force}


def _strategies(spec: Any, config: Any, in_force: Any, store: Any, progress: Any) -> dict[str, Any]:
    """The strategy A/B: ``config.rounds`` interleaved segments per strategy from one starting state."""
    names = parse_strategies(",".join(config.compare))
    steps = config.segment_steps
    spec = dataclasses.replace(
        spec, train=dataclasses.replace(spec.train, max_steps=10**9, warmup_steps=max(1, steps))
    )
    stored = {"model": spec.model, "data": spec.data, "seq_len": spec.seq_len, "compare": names,
              "rounds": config.rounds, "segment_steps": steps}  # fmt: skip
    with store.recording("train", spec.model, stored, manifest()) as run:
        result = run_compare(spec, names, config.rounds, steps, progress.message, progress)
        run.complete({**result, "threads": in_force})
    return {"run_id": run.id, "kind": "train", **result, "threads": in_force}


def distill(
    teacher: str,
    config: Any = None,
    *,
    threads: int | None = None,
    store: Any = None,
    progress: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Distil ``teacher`` into a smaller student and record the run; return what ``distill --json``
    prints: the teacher's, the distilled and the plain student's held-out perplexity with paired CIs.

    Args:
        teacher: a causal LM spec.
        config: a ``training.DistillRun``; or its fields as keyword arguments (``student="half"``,
            ``max_steps=100``, ``alpha=0.5``, ``output="distilled/smol-half"``, ...).
        threads, store, progress: as ``train``.
    """
    config = config_of(DistillRun, config, settings)
    spec = config.spec(teacher)
    progress, store = progress or Silent(), store_of(store)
    in_force = apply_threads(threads)
    distilling = DistillSettings(config.student, config.alpha, config.temperature, config.baseline,
                                 config.eval_text, config.eval_tokens, config.window)  # fmt: skip
    stored = {"teacher": teacher, "data": config.data, "seq_len": config.seq_len,
              "train": spec.train.to_dict(), "loader": spec.loader.to_dict(),
              "distill": dataclasses.asdict(distilling), "output": str(spec.output)}  # fmt: skip
    with store.recording("distill", teacher, stored, manifest(seed=spec.train.seed)) as run:
        result = run_distill(spec, distilling, progress.message, progress)
        for m in result.pop("measurements"):
            run.add(m)
        run.complete({**result, "threads": in_force})
    return {"run_id": run.id, "kind": "distill", **result, "threads": in_force}
