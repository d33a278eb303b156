"""The training loop: AdamW with warm-up and cosine decay, clipping, accumulation, mixed precision
(bf16 autocast; fp16 with loss scaling on GPU; bf16 weights with fp32 masters), activation
checkpointing, ``torch.compile``, DDP or FSDP, and a per-step time breakdown (data wait, forward,
backward, optimiser; DDP's all-reduce time beside them). Checkpoints: ``unbottle.training.checkpoint``.

On a GPU each phase boundary synchronises the device, so the phase times are device times, not
launch times; batches are copied from pinned memory on a side stream one batch ahead.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from unbottle.core.config import Config, check_at_least
from unbottle.core.errors import ConfigError, TrainError
from unbottle.core.naming import given, opt
from unbottle.training import distributed
from unbottle.training.checkpoint import resume, save
from unbottle.training.loader import LoaderConfig, ResumableSampler, make_loader, to_device
from unbottle.training.losses import LOSSES, LossModel, next_token_loss

__all__ = ["PRECISIONS", "TrainConfig", "Trainer", "lr_factor", "next_token_loss"]

PRECISIONS = ("fp32", "bf16", "bf16-pure", "fp16")
PARALLEL = ("ddp", "fsdp")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """One training run (see the module docstring)."""

    max_steps: int = 50
    grad_accum: int = 1
    lr: float = 3e-4
    warmup_steps: int = 10
    weight_decay: float = 0.1
    clip: float = 1.0
    precision: str = "fp32"
    checkpoint_every: int = 0
    eval_every: int = 0
    eval_batches: int = 8
    loss: str = "full"
    compile: bool = False
    checkpointing: bool = False
    parallel: str = "ddp"
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in [
            ("loss", self.loss, LOSSES),
            ("precision", self.precision, PRECISIONS),
            ("parallel", self.parallel, PARALLEL),
        ]:
            if value not in allowed:
                raise ConfigError(f"{given(name, value, quote=True)} given; allowed: {', '.join(allowed)}")
        check_at_least([("max_steps", self.max_steps, 1), ("grad_accum", self.grad_accum, 1)])
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise ConfigError(
                f"{given('precision', 'fp16')} given on the CPU; fp16 with loss scaling is for GPUs: "
                f"use {given('precision', 'bf16')} here (this CPU computes bf16 natively)"
            )
        if self.precision == "bf16-pure" and self.parallel == "fsdp":
            raise ConfigError(
                f"{given('precision', 'bf16-pure')} with {given('parallel', 'fsdp')} is not supported; "
                "use bf16"
            )

    def autocast_dtype(self) -> Any:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 10% at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _device(name: str) -> Any:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"{given('device', name, quote=True)} given; allowed: cpu, cuda, cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{given('device', name)} given, but this machine has no CUDA GPU; use {given('device', 'cpu')}"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{given('device', name, quote=True)} given; allowed: cpu, cuda, cuda:N")
    return device


class Trainer:
    """Trains ``model`` (a causal LM) on ``dataset`` windows; ``out`` holds its checkpoints."""

    def __init__(
        self,
        model: Any,
        dataset: Any,
        config: TrainConfig,
        loader: LoaderConfig,
        out: Path,
        rank: int = 0,
        world: int = 1,
        objective: Any = None,
    ) -> None:
        """``objective``: the loss module to train (its ``lm`` is ``model``); default: next-token CE
        as ``config.loss`` says (``unbottle.training.losses.LossModel``)."""
        self.dataset, self.cfg, self.loader_cfg, self.out = dataset, config, loader, out
        if len(dataset) < loader.batch_size * world:
            raise ConfigError(
                f"the training data has {len(dataset)} samples, fewer than one batch of "
                f"{loader.batch_size} × {world} process(es); give more text, or a smaller "
                f"{opt('batch_size')} or {opt('seq_len')}"
            )
        self.rank, self.world = rank, world
        self.device = _device(config.device)
        self.base = model.to(self.device)  # the plain module (checkpoints, saving)
        if config.checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ConfigError(f"{opt('checkpointing')}: {type(model).__name__} does not support it")
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.step, self.epoch, self.position = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.master, self.master_names, self.live = self._masters()
        self.objective = (
            objective if objective is not None else LossModel(model, config.loss, config.autocast_dtype())
        )
        self.model = self._wrap(self.objective)
        params = self.master if self.master is not None else list(self.model.parameters())
        try:
            self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, TypeError):
            self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, config.warmup_steps, config.max_steps)
        )
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        torch.manual_seed(config.seed)

    def _masters(self) -> tuple[list[Any] | None, list[str], list[Any]]:
        """(fp32 masters or None, trained parameter names, the trained parameters). For bf16-pure:
        bf16 weights for compute, fp32 master copies for the optimiser."""
        named = [(n, p) for n, p in self.base.named_parameters() if p.requires_grad]
        names, live = [n for n, _ in named], [p for _, p in named]
        if self.cfg.precision != "bf16-pure":
            return None, names, live
        master = [torch.nn.Parameter(p.detach().float().clone()) for p in live]
        self.base.to(torch.bfloat16)  # in place: ``live`` now holds the bf16 weights
        return master, names, live

    def _wrap(self, loss_model: Any) -> Any:
        self.comm_spans: list[tuple[float, float]] = []
        self.sharded = None  # the FSDP module, for gathering full state dicts
        model = loss_model
        if self.world > 1 and self.cfg.parallel == "fsdp":
            model = self.sharded = distributed.fsdp(loss_model, self.base)
        elif self.world > 1:
            model = distributed.ddp(loss_model, self.device, self.comm_spans)
        if self.cfg.compile:
            model = torch.compile(model)
        return model

    def _batches(self):
        while True:
            sampler = ResumableSampler(
                len(self.dataset), self.loader_cfg.seed, self.epoch, self.position, self.rank, self.world
            )
            for batch in to_device(make_loader(self.dataset, self.loader_cfg, sampler), self.device):
                self.position += self.loader_cfg.batch_size
                yield batch
            self.epoch, self.position = self.epoch + 1, 0

    def train(
        self, steps: int | None = None, on_step: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Run until ``max_steps`` (or ``steps`` more); return the per-step records of this call.

        ``on_step`` is called with each step's record as it ends (e.g. to draw progress).
        """
        self.model.train()
        batches = self._batches()
        stop = min(self.cfg.max_steps, self.step + (steps if steps is not None else self.cfg.max_steps))
        records = []
        while self.step < stop:
            records.append(self._one_step(batches))
            self._check_finite(records[-1])
            if on_step is not None:
                on_step(records[-1])
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                self.save()
        return records

    def _check_finite(self, record: dict[str, Any]) -> None:
        """Stop a run whose loss stopped being a number: every later step would train on garbage.
        (fp16 is exempt: its loss scaler skips steps that overflow and recovers.)"""
        if math.isfinite(record["loss"]) or self.cfg.precision == "fp16":
            return
        lr = self.cfg.lr
        raise TrainError(
            f"the training loss became {record['loss']} at step {record['step']} with {given('lr', lr)}: "
            f"the run diverged; lower {opt('lr')} (the default is 3e-4) and start again (a checkpoint "
            "saved before this step is intact)"
        )

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _one_step(self, batches: Any) -> dict[str, Any]:
        times = {"data_s": 0.0, "forward_s": 0.0, "backward_s": 0.0, "optimizer_s": 0.0}
        loss_sum, tokens = 0.0, 0
        self.comm_spans.clear()
        start = self._clock()
        for _ in range(self.cfg.grad_accum):
            t = self._clock()
            batch = next(batches)
            times["data_s"] += self._clock() - t
            t = self._clock()
            loss = self.model(batch) / self.cfg.grad_accum
            times["forward_s"] += self._clock() - t
            t = self._clock()
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            times["backward_s"] += self._clock() - t
            loss_sum += self._global_mean(loss.detach()) * self.cfg.grad_accum
            tokens += batch[:, :-1].numel() * self.world
        t = self._clock()
        grad_norm = self._optimizer_step()
        times["optimizer_s"] = self._clock() - t
        self.step += 1
        wall = self._clock() - start
        record = {
            "step": self.step,
            "loss": loss_sum / self.cfg.grad_accum,
            "lr": self.sched.get_last_lr()[0],
            "grad_norm": grad_norm,
            "tokens": tokens,
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
            **times,
        }
        record.update(getattr(self.objective, "parts", {}))  # e.g. distillation's CE and KL
        if self.world > 1 and self.cfg.parallel == "ddp":
            record["comm_s"] = _union(self.comm_spans)  # all-reduce in flight, overlapping backward
        self.history.append(record)
        return record

    def _optimizer_step(self) -> float:
        if self.master is not None:
            for p, m in zip(self.live, self.master, strict=True):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        trained = self.master if self.master is not None else list(self.model.parameters())
        norm = torch.nn.utils.clip_grad_norm_(trained, self.cfg.clip)
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.master is not None:
            with torch.no_grad():
                for p, m in zip(self.live, self.master, strict=True):
                    p.copy_(m)
        self.sched.step()
        return norm

    def _global_mean(self, value: Any) -> float:
        """The mean over ranks (DDP averages gradients the same way)."""
        if self.world == 1:
            return float(value)

        value = value.clone()
        dist.all_reduce(value)
        return float(value) / self.world

    def save(self) -> Path:
        return save(self)

    def resume(self) -> bool:
        return resume(self)

    def evaluate(self, dataset: Any, batches: int, batch_size: int) -> dict[str, float]:
        """Mean next-token loss (and perplexity) over the first ``batches`` batches of ``dataset``."""
        self.model.eval()
        losses = []
        with torch.no_grad():
            size = min(batch_size, len(dataset))
            for b in range(min(batches, max(1, len(dataset) // size))):
                batch = torch.stack([dataset[i] for i in range(b * size, (b + 1) * size)])
                losses.append(float(self.model(batch.to(self.device))))
        self.model.train()
        loss = sum(losses) / len(losses)
        return {"step": self.step, "val_loss": loss, "val_perplexity": math.exp(loss)}


def _union(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of ``(start, end)`` intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total
