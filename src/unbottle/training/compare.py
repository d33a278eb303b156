"""Strategy A/B for training: short interleaved segments per strategy from the same starting state.

Every strategy gets its own copy of the model and optimiser, made from the same initial state, and
the same seeded batches. Rounds run one segment of each strategy in a rotating order, so drift on a
shared machine hits all of them alike; a segment's tokens/s is one paired sample. Speed ratios against
the first strategy get a paired bootstrap CI (as ``unbottle ab``); the loss curves are kept, and a
strategy whose losses over the last segment differ from the first strategy's beyond their paired CI
(and by more than 1%) is flagged: it changes what is learnt, not only how fast.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np

from unbottle.comparison.speed import compare_samples
from unbottle.core.errors import ConfigError
from unbottle.core.naming import given
from unbottle.stats import paired_bootstrap
from unbottle.training.spec import TrainSpec
from unbottle.training.trainer import Trainer

WARMUP_STEPS = 2
STRATEGIES: dict[str, dict[str, Any]] = {
    "base": {},
    "naive": {"data_mode": "on-the-fly"},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
    "bf16-compile": {"precision": "bf16", "compile": True},
    "bf16-pure": {"precision": "bf16-pure"},
    "chunked": {"loss": "chunked"},
    "bf16-chunked": {"precision": "bf16", "loss": "chunked"},
    "bf16-pure-compile": {"precision": "bf16-pure", "compile": True},
    "fused": {"loss": "fused"},
    "bf16-fused": {"precision": "bf16", "loss": "fused"},
    "bf16-fused-compile": {"precision": "bf16", "loss": "fused", "compile": True},
    "checkpointing": {"checkpointing": True},
    "workers": {"workers": 2},
}


def parse_strategies(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or len(names) < 2:
        raise ConfigError(
            f"{given('compare', text, quote=True)} given; give two or more of {', '.join(STRATEGIES)}, "
            "comma-separated (the first is the reference)"
        )
    return names


def _trainer(name: str, model: Any, datasets: dict[str, Any], spec: TrainSpec) -> Any:
    s = STRATEGIES[name]
    changes = {k: s[k] for k in ("precision", "loss", "compile", "checkpointing") if k in s}
    return Trainer(
        copy.deepcopy(model),
        datasets[s.get("data_mode", "cache")],
        dataclasses.replace(spec.train, **changes),
        dataclasses.replace(spec.loader, workers=s.get("workers", spec.loader.workers)),
        spec.output / name,
    )


def compare_strategies(
    model: Any,
    datasets: dict[str, Any],
    names: list[str],
    spec: TrainSpec,
    rounds: int,
    steps: int,
    on_segment: Any = None,
) -> dict[str, Any]:
    """Run ``rounds`` rounds of ``steps``-step segments per strategy, each strategy changing ``spec``'s
    training settings and writing under ``spec.output / name``; return the comparison document.
    ``datasets``: the ``cache`` and ``on-the-fly`` pipelines over the same samples. ``on_segment(name)``
    is called after each measured segment (progress display)."""
    trainers = {n: _trainer(n, model, datasets, spec) for n in names}
    for t in trainers.values():  # warm-up (compilation and the recompile after the loss's first-use
        t.train(steps=WARMUP_STEPS)  # check, allocator, workers), not measured
    speed: dict[str, list[float]] = {n: [] for n in names}
    order = []
    for r in range(rounds):
        turn = names[r % len(names) :] + names[: r % len(names)]
        order.append(turn)
        for n in turn:
            records = trainers[n].train(steps=steps)
            speed[n].append(sum(x["tokens"] for x in records) / sum(x["wall_s"] for x in records))
            if on_segment is not None:
                on_segment(n)
    ref = names[0]
    doc: dict[str, Any] = {"reference": ref, "order": order, "warmup_steps": WARMUP_STEPS, "strategies": {}}
    for n in names:
        entry: dict[str, Any] = {"tokens_per_s": speed[n], "losses": [x["loss"] for x in trainers[n].history]}
        if n != ref:
            cmp = compare_samples("train.tokens_per_s", "tokens/s", True, speed[ref], speed[n], paired=True)
            entry["speed"] = cmp.to_dict()
            entry["loss_change"] = _loss_change(trainers[ref].history, trainers[n].history, steps)
        doc["strategies"][n] = entry
    return doc


def _loss_change(ref: list[dict[str, Any]], other: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Mean relative loss difference over the last segment, paired by step, with a bootstrap CI."""
    a = np.array([x["loss"] for x in ref[-steps:]])
    b = np.array([x["loss"] for x in other[-steps:]])
    est = paired_bootstrap(
        a, b, lambda ra, rb: ((rb - ra) / ra * 100).mean(axis=1), method="relative loss, %"
    )
    flagged = bool(not est.contains(0.0) and abs(est.point) > 1.0)
    return {"pct": est.point, "ci_low": est.ci_low, "ci_high": est.ci_high, "flagged": flagged}
