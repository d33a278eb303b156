"""The training loop: AdamW with warm-up and cosine decay, clipping, accumulation, bf16 autocast, and a
per-step time breakdown (data wait, forward, backward, optimiser); checkpoints are atomic and resume
exactly (model, optimiser, scheduler, data position, RNG states).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from unbottle.core.config import Config
from unbottle.core.errors import ConfigError
from unbottle.train.loader import LoaderConfig, ResumableSampler, make_loader

PRECISIONS = ("fp32", "bf16", "bf16-pure")
LOSS_CHUNK = 256  # positions per chunk of the chunked loss


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """One training run (single process; see the module docstring)."""

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
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("full", "chunked"):
            raise ConfigError(f"--loss {self.loss!r} given; allowed: full, chunked")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r} given; allowed: {', '.join(PRECISIONS)}")
        for flag, value, low in [("--max-steps", self.max_steps, 1), ("--grad-accum", self.grad_accum, 1)]:
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{flag} {value!r} given; allowed: an integer >= {low}")


def next_token_loss(model: Any, batch: Any, bf16: bool = False) -> Any:
    """Mean cross-entropy of predicting ``batch[:, 1:]`` from ``batch[:, :-1]`` (logits upcast to fp32)."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=batch[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 10% at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


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
    ) -> None:
        import torch

        self.dataset, self.cfg, self.loader_cfg, self.out = dataset, config, loader, out
        if len(dataset) < loader.batch_size * world:
            raise ConfigError(
                f"the training data has {len(dataset)} samples, fewer than one batch of "
                f"{loader.batch_size} × {world} process(es); give more text, or a smaller --batch-size "
                "or --seq-len"
            )
        self.rank, self.world = rank, world
        self.base = model  # the plain module (checkpoints, saving)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model)
        self.model = model
        self.step = 0
        self._chunk_checked = False
        self.epoch, self.position = 0, 0
        self.history: list[dict[str, Any]] = []
        named = [(n, p) for n, p in self.base.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        self.master_names = [n for n, _ in named]
        self.master: list[Any] | None = None
        if config.precision == "bf16-pure":
            # bf16 weights for compute (no per-forward casts), fp32 master copies in the optimiser
            self.master = [torch.nn.Parameter(p.detach().float().clone()) for p in params]
            self.model.to(torch.bfloat16)
            params = self.master
        try:
            self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, TypeError):
            self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, config.warmup_steps, config.max_steps)
        )
        torch.manual_seed(config.seed)

    def _batches(self):
        while True:
            sampler = ResumableSampler(
                len(self.dataset), self.loader_cfg.seed, self.epoch, self.position, self.rank, self.world
            )
            for batch in make_loader(self.dataset, self.loader_cfg, sampler):
                self.position += self.loader_cfg.batch_size
                yield batch
            self.epoch, self.position = self.epoch + 1, 0

    def train(self, steps: int | None = None) -> list[dict[str, Any]]:
        """Run until ``max_steps`` (or ``steps`` more); return the per-step records of this call."""
        self.model.train()
        batches = self._batches()
        stop = min(self.cfg.max_steps, self.step + (steps if steps is not None else self.cfg.max_steps))
        records = []
        while self.step < stop:
            records.append(self._one_step(batches))
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                self.save()
        return records

    def _one_step(self, batches: Any) -> dict[str, Any]:
        import torch

        times = {"data_s": 0.0, "forward_s": 0.0, "backward_s": 0.0, "optimizer_s": 0.0}
        loss_sum, tokens = 0.0, 0
        start = time.perf_counter()
        for _ in range(self.cfg.grad_accum):
            t = time.perf_counter()
            batch = next(batches)
            times["data_s"] += time.perf_counter() - t
            t = time.perf_counter()
            loss = self._loss(batch) / self.cfg.grad_accum
            times["forward_s"] += time.perf_counter() - t
            t = time.perf_counter()
            loss.backward()
            times["backward_s"] += time.perf_counter() - t
            loss_sum += self._global_mean(loss.detach()) * self.cfg.grad_accum
            tokens += batch[:, :-1].numel() * self.world
        t = time.perf_counter()
        if self.master is not None:
            live = [p for p in self.model.parameters() if p.requires_grad]
            for p, m in zip(live, self.master, strict=True):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        trained = self.master if self.master is not None else list(self.model.parameters())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trained, self.cfg.clip))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.master is not None:
            with torch.no_grad():
                for p, m in zip(live, self.master, strict=True):
                    p.copy_(m)
        self.sched.step()
        times["optimizer_s"] = time.perf_counter() - t
        self.step += 1
        wall = time.perf_counter() - start
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
        self.history.append(record)
        return record

    def _global_mean(self, value: Any) -> float:
        """The mean over ranks (DDP averages gradients the same way)."""
        if self.world == 1:
            return float(value)
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        return float(value) / self.world

    def _loss(self, batch: Any) -> Any:
        """Mean cross-entropy of predicting ``batch[:, 1:]`` from ``batch[:, :-1]`` (seq_len each)."""

        if self.cfg.loss == "chunked" and self.world == 1:
            return self._chunked_loss(batch)
        return next_token_loss(self.model, batch, self.cfg.precision == "bf16")

    def _chunked_loss(self, batch: Any) -> Any:
        """The same loss with the output layer and the fp32 log-softmax applied per chunk of positions,
        so the full (tokens × vocabulary) logits never exist at once: cache-sized pieces instead of
        one large tensor. Checked against the full loss on first use."""
        import torch

        decoder = getattr(self.base, self.base.base_model_prefix)
        head = self.base.get_output_embeddings()
        bf16 = self.cfg.precision == "bf16"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = decoder(input_ids=batch[:, :-1]).last_hidden_state.flatten(0, 1)
        targets = batch[:, 1:].flatten()
        total = hidden.new_zeros((), dtype=torch.float32)
        for i in range(0, hidden.shape[0], LOSS_CHUNK):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = head(hidden[i : i + LOSS_CHUNK])
            total = total + torch.nn.functional.cross_entropy(
                logits.float(), targets[i : i + LOSS_CHUNK], reduction="sum"
            )
        loss = total / hidden.shape[0]
        if not self._chunk_checked:
            self._check_chunked(batch, loss)
        return loss

    def _check_chunked(self, batch: Any, loss: Any) -> None:
        import torch

        loss = loss.detach()
        with torch.no_grad():
            full = float(next_token_loss(self.base, batch, self.cfg.precision == "bf16"))
        if abs(float(loss) - full) > 1e-3 * abs(full):
            raise ConfigError(
                f"--loss chunked gives {float(loss):.5f} where the model's own forward gives {full:.5f}: "
                "this architecture post-processes its logits; use --loss full"
            )
        self._chunk_checked = True

    def evaluate(self, dataset: Any, batches: int, batch_size: int) -> dict[str, float]:
        """Mean next-token loss (and perplexity) over the first ``batches`` batches of ``dataset``."""
        import torch

        self.model.eval()
        losses = []
        with torch.inference_mode():
            size = min(batch_size, len(dataset))
            for b in range(min(batches, max(1, len(dataset) // size))):
                batch = torch.stack([dataset[i] for i in range(b * size, (b + 1) * size)])
                losses.append(float(self._loss(batch)))
        self.model.train()
        loss = sum(losses) / len(losses)
        return {"step": self.step, "val_loss": loss, "val_perplexity": math.exp(loss)}

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self) -> Path:
        """Write a checkpoint folder aside, then rename it in and move the ``latest`` pointer."""
        import torch
        from safetensors.torch import save_file

        self.out.mkdir(parents=True, exist_ok=True)
        final = self.out / f"step-{self.step:07d}"
        tmp = self.out / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        state = {k: v.detach().clone().contiguous() for k, v in self.base.state_dict().items()}
        if self.master is not None:  # save the fp32 masters, not their bf16 copies
            state.update({n: m.detach().clone() for n, m in zip(self.master_names, self.master, strict=True)})
        save_file(state, tmp / "model.safetensors")  # cloned: tied weights no longer share storage
        torch.save(
            {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}, tmp / "optim.pt"
        )
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")  # the loop draws only from torch's RNG
        meta = {"step": self.step, "epoch": self.epoch, "position": self.position,
                "history": self.history, "config": self.cfg.to_dict(), "loader": self.loader_cfg.to_dict(),
                "model_type": getattr(self.base.config, "model_type", None), "world": self.world}  # fmt: skip
        (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        pointer = self.out / ".latest.tmp"
        pointer.write_text(final.name, encoding="utf-8")
        os.replace(pointer, self.out / "latest")
        return final

    def resume(self) -> bool:
        """Load the latest checkpoint in ``out`` if there is one; True when resumed."""
        import torch
        from safetensors.torch import load_file

        latest = self.out / "latest"
        if not latest.exists():
            return False
        folder = self.out / latest.read_text(encoding="utf-8").strip()
        meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        if meta.get("model_type") != getattr(self.base.config, "model_type", None):
            raise ConfigError(
                f"checkpoint {folder} is of a {meta.get('model_type')!r} model, not this "
                f"{getattr(self.base.config, 'model_type', None)!r} one; use another output folder"
            )
        if meta.get("world", 1) != self.world:
            raise ConfigError(
                f"checkpoint {folder} was written by {meta.get('world', 1)} process(es); resume it with "
                f"--nproc {meta.get('world', 1)} (the data position is per process)"
            )
        missing, unexpected = self.base.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
        if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
            raise ConfigError(
                f"checkpoint {folder} does not fit this model "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]}); use another output folder"
            )
        if self.master is not None:
            saved = load_file(folder / "model.safetensors")
            with torch.no_grad():
                for n, m in zip(self.master_names, self.master, strict=True):
                    m.copy_(saved[n])
        optim = torch.load(folder / "optim.pt", weights_only=True)
        self.opt.load_state_dict(optim["optimizer"])
        self.sched.load_state_dict(optim["scheduler"])
        rng = torch.load(folder / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        self.step, self.epoch, self.position = meta["step"], meta["epoch"], meta["position"]
        self.history = meta["history"]
        return True
