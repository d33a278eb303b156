"""Atomic, resumable training checkpoints: model (safetensors), optimiser and scheduler, data position,
RNG state, history.

A checkpoint is written into a hidden folder beside its final name, renamed in, and only then does the
``latest`` pointer move (written aside, ``os.replace``d). A save that fails part-way — a full disk, a
kill — leaves the previous checkpoint and the pointer as they were, and its half-written folder is
removed. Under FSDP every rank joins in gathering the full state; rank 0 writes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from unbottle.core.errors import ConfigError, TrainError
from unbottle.core.naming import given, opt

PREFIX = "lm."  # the causal LM inside the loss module


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(trainer: Any) -> dict[str, Any]:
    """The model's weights, full and unsharded, with the model's own names (every rank must call this
    under FSDP; ranks other than 0 get an empty dict)."""
    if trainer.sharded is not None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(trainer.sharded, options=_options())
        return {k.removeprefix(PREFIX): v for k, v in state.items()}
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in trainer.base.state_dict().items()}
    if trainer.master is not None:  # the fp32 masters, not their bf16 copies
        names = trainer.master_names
        state.update({n: m.detach().to("cpu", copy=True) for n, m in zip(names, trainer.master, strict=True)})
    return state


def _full_optimizer_state(trainer: Any) -> dict[str, Any]:
    if trainer.sharded is not None:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(trainer.sharded, trainer.opt, options=_options())
    return trainer.opt.state_dict()


def save(trainer: Any) -> Path:
    """Write a checkpoint folder aside, then rename it in and move the ``latest`` pointer."""
    model_state, optim_state = full_model_state(trainer), _full_optimizer_state(trainer)
    final = trainer.out / f"step-{trainer.step:07d}"
    if trainer.rank == 0:
        tmp = trainer.out / f".tmp-{final.name}-{os.getpid()}"
        try:
            _write(trainer, tmp, model_state, optim_state)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            pointer = trainer.out / ".latest.tmp"
            pointer.write_text(final.name, encoding="utf-8")
            os.replace(pointer, trainer.out / "latest")
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
            shutil.rmtree(tmp, ignore_errors=True)
            (trainer.out / ".latest.tmp").unlink(missing_ok=True)
            kept = latest_folder(trainer.out)
            left = f"the previous checkpoint {kept.name} is intact" if kept else "there was none before"
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise TrainError(
                f"could not write the step-{trainer.step} checkpoint in {trainer.out}: "
                f"{reason}; {left} — free space or choose another {opt('output', flag='-o')}, "
                f"then rerun with {opt('resume')}"
            ) from exc
    if trainer.world > 1:
        dist.barrier()
    return final


def _write(trainer: Any, tmp: Path, model_state: dict[str, Any], optim_state: dict[str, Any]) -> None:
    trainer.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(model_state, tmp / "model.safetensors")  # cloned: tied weights no longer share storage
    torch.save({"optimizer": optim_state, "scheduler": trainer.sched.state_dict()}, tmp / "optim.pt")
    rng = {"torch": torch.get_rng_state()}  # the loop draws only from torch's RNG
    if trainer.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(trainer.device)
    torch.save(rng, tmp / "rng.pt")
    meta = {"step": trainer.step, "epoch": trainer.epoch, "position": trainer.position,
            "history": trainer.history, "config": trainer.cfg.to_dict(),
            "loader": trainer.loader_cfg.to_dict(), "world": trainer.world,
            "model_type": getattr(trainer.base.config, "model_type", None),
            "seq_len": getattr(trainer.dataset, "seq_len", None)}  # fmt: skip
    (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")


def latest_folder(out: Path) -> Path | None:
    """The checkpoint folder the ``latest`` pointer names, or None."""
    pointer = out / "latest"
    if not pointer.exists():
        return None
    folder = out / pointer.read_text(encoding="utf-8").strip()
    return folder if folder.is_dir() else None


def resume(trainer: Any) -> bool:
    """Load the latest checkpoint in ``trainer.out`` if there is one; True when resumed."""
    folder = latest_folder(trainer.out)
    if folder is None:
        return False
    meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    _check_fits(trainer, folder, meta)
    saved = load_file(folder / "model.safetensors")
    optim = torch.load(folder / "optim.pt", weights_only=True)
    if trainer.sharded is not None:
        _load_sharded(trainer, saved, optim["optimizer"])
    else:
        _load_plain(trainer, folder, saved)
        trainer.opt.load_state_dict(optim["optimizer"])
    trainer.sched.load_state_dict(optim["scheduler"])
    rng = torch.load(folder / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], trainer.device)
    trainer.step, trainer.epoch, trainer.position = meta["step"], meta["epoch"], meta["position"]
    trainer.history = meta["history"]
    return True


def _check_fits(trainer: Any, folder: Path, meta: dict[str, Any]) -> None:
    mine = getattr(trainer.base.config, "model_type", None)
    if meta.get("model_type") != mine:
        raise ConfigError(
            f"checkpoint {folder} is of a {meta.get('model_type')!r} model, not this {mine!r} one; "
            "use another output folder"
        )
    if meta.get("world", 1) != trainer.world:
        raise ConfigError(
            f"checkpoint {folder} was written by {meta.get('world', 1)} process(es); resume it with "
            f"{given('nproc', meta.get('world', 1))} (the data position is per process)"
        )
    _check_same_run(trainer, folder, meta)


# what a resumed run must share with its checkpoint, or the two trainings mix (max_steps may grow)
_SAME = ("lr", "weight_decay", "clip", "precision", "loss", "parallel")


def _check_same_run(trainer: Any, folder: Path, meta: dict[str, Any]) -> None:
    """Refuse resuming with settings that change the training: its optimiser settings, sequence
    length or global batch; or a step limit the checkpoint is already past."""
    saved, now = meta.get("config") or {}, trainer.cfg.to_dict()
    pairs = [(k, saved.get(k), now[k]) for k in _SAME if k in saved]
    pairs.append(("seq_len", meta.get("seq_len"), getattr(trainer.dataset, "seq_len", None)))
    batch = (meta.get("loader") or {}).get("batch_size")
    if batch is not None and "grad_accum" in saved:
        now_batch = trainer.loader_cfg.batch_size * trainer.cfg.grad_accum
        pairs.append(("global_batch", batch * saved["grad_accum"], now_batch))
    changed = [(k, a, b) for k, a, b in pairs if a is not None and b is not None and a != b]
    if changed:
        shown = "; ".join(f"{given(k, a)} then, {given(k, b)} now" for k, a, b in changed)
        raise ConfigError(
            f"checkpoint {folder} was trained with other settings ({shown}); resuming would mix two "
            f"trainings: resume with the checkpoint's settings, or choose another {opt('output', flag='-o')}"
        )
    if trainer.cfg.max_steps < meta["step"]:
        raise ConfigError(
            f"checkpoint {folder} is at step {meta['step']}, past "
            f"{given('max_steps', trainer.cfg.max_steps)}: give {opt('max_steps')} {meta['step']} or more"
        )


def _load_plain(trainer: Any, folder: Path, saved: dict[str, Any]) -> None:
    missing, unexpected = trainer.base.load_state_dict(saved, strict=False)
    if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
        raise ConfigError(
            f"checkpoint {folder} does not fit this model "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); use another output folder"
        )
    if trainer.master is not None:
        with torch.no_grad():
            for n, m in zip(trainer.master_names, trainer.master, strict=True):
                m.copy_(saved[n])


def _load_sharded(trainer: Any, saved: dict[str, Any], optim: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(trainer.sharded, {PREFIX + k: v for k, v in saved.items()}, options=opts)
    set_optimizer_state_dict(trainer.sharded, trainer.opt, optim_state_dict=optim, options=opts)
