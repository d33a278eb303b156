"""The largest micro-batch that fits a memory budget, agreed by every rank, and the accumulation to
reach a requested global batch.

Peak memory of one forward + backward is measured at micro-batches 1 and 2 (peak RSS on CPU, the
allocator's peak on GPU); the per-sample slope predicts the largest batch under the budget, which is
then tried for real and halved until it fits (on GPU an out-of-memory error counts as not fitting).
Under DDP every rank measures and the smallest answer wins (``all_reduce`` MIN), so all ranks agree.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
import torch.distributed as dist

from unbottle.benchmarking.tracker import ResourceTracker
from unbottle.core.errors import ConfigError
from unbottle.core.naming import given, opt
from unbottle.training.trainer import next_token_loss


def _peak_bytes(model: Any, batch: int, seq_len: int, vocab: int, precision: str) -> float | None:
    """Peak memory of one training forward + backward at ``batch``; None when it ran out of memory."""
    model.zero_grad(set_to_none=True)
    gc.collect()
    x = torch.randint(0, vocab, (batch, seq_len + 1))
    try:
        with ResourceTracker() as tracker:
            next_token_loss(model, x, torch.bfloat16 if precision == "bf16" else None).backward()
    except (torch.cuda.OutOfMemoryError, MemoryError):
        return None
    finally:
        model.zero_grad(set_to_none=True)
    return float(tracker.peak_rss_bytes)


def find_micro_batch(
    model: Any, seq_len: int, budget_bytes: float, precision: str = "fp32", max_batch: int = 1024
) -> dict[str, Any]:
    """``{"batch": B, "measured": {batch: peak bytes}, "budget_bytes": ...}`` for this process.

    Raises:
        ConfigError: not even one sample fits the budget.
    """
    vocab = model.config.vocab_size
    measured: dict[int, float] = {}
    for b in (1, 2):
        peak = _peak_bytes(model, b, seq_len, vocab, precision)
        if peak is None or peak > budget_bytes:
            if b == 1:
                raise ConfigError(
                    f"one sample of {seq_len} tokens needs {peak or float('inf'):.3g} bytes, over the memory "
                    f"budget of {budget_bytes:.3g}; lower {opt('seq_len')} or raise the budget"
                )
            return {"batch": 1, "measured": measured, "budget_bytes": budget_bytes}
        measured[b] = peak
    slope = max(measured[2] - measured[1], 1.0)
    guess = int(min(max_batch, 1 + (budget_bytes - measured[1]) // slope))
    while guess > 2:
        peak = _peak_bytes(model, guess, seq_len, vocab, precision)
        if peak is not None:
            measured[guess] = peak
            if peak <= budget_bytes:
                break
        guess //= 2
    return {"batch": max(2, guess), "measured": measured, "budget_bytes": budget_bytes}


def agree(batch: int, world: int) -> int:
    """The smallest micro-batch over all ranks (every rank must fit)."""
    if world == 1:
        return batch

    value = torch.tensor([batch])
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


def accumulation(global_batch: int | None, micro: int, world: int) -> int:
    """Micro-batches per step so that ``micro × world × accumulation == global_batch``.

    Raises:
        ConfigError: ``global_batch`` is not a multiple of ``micro × world``.
    """
    if global_batch is None:
        return 1
    per_step = micro * world
    if global_batch < per_step or global_batch % per_step:
        nearest = max(per_step, global_batch // per_step * per_step)
        raise ConfigError(
            f"{given('global_batch', global_batch)} is not a multiple of micro-batch {micro} × {world} "
            "process(es) "
            f"= {per_step}; use a multiple of {per_step} (e.g. {nearest})"
        )
    return global_batch // per_step
