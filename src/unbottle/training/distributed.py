"""Several processes through torchrun: the launcher and each worker's process-group set-up.

``unbottle train ... --nproc N`` starts ``python -m torch.distributed.run --standalone
--nproc_per_node N -m unbottle.cli train ...`` (the same command without ``--nproc``); each worker
finds ``RANK`` and ``WORLD_SIZE`` in its environment, joins the group (gloo on CPU, NCCL on GPU) and
trains its share of every global batch under DDP. Rank 0 records the run and prints. For several
machines, run that torchrun command yourself with its own rendezvous options (``--nnodes``,
``--node-rank``, ``--rdzv-endpoint``; see the README).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from unbottle.core.errors import ConfigError
from unbottle.core.naming import given


def launch(nproc: int, argv: list[str]) -> int:
    """Run the workers through torchrun on this machine; return torchrun's exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "unbottle.cli", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.call(cmd, env=env)


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """(rank, world size); joins the process group when torchrun started this process: NCCL when
    training on GPUs (each rank on its own, ``LOCAL_RANK``), gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1

    if not dist.is_initialized():
        gpu = device.startswith("cuda")
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpu else "gloo")
    return dist.get_rank(), world


def rank_device(device: str) -> str:
    """``cuda`` means this process's own GPU (``LOCAL_RANK``) under torchrun."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def ddp(module: Any, device: Any, spans: list[tuple[float, float]]) -> Any:
    """``module`` under DDP, its gradient all-reduces timed: each bucket's (launch, done) goes to
    ``spans`` (they overlap the backward pass; the trainer reports their union as ``comm_s``)."""
    wrapped = DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)

    def timed_allreduce(state, bucket):  # DDP checks these annotations: leave them out
        start = time.perf_counter()
        grads = bucket.buffer().div_(dist.get_world_size())
        future = dist.all_reduce(grads, async_op=True).get_future()

        def done(f: Any) -> Any:
            spans.append((start, time.perf_counter()))
            return f.value()[0]

        return future.then(done)

    wrapped.register_comm_hook(None, timed_allreduce)
    return wrapped


def fsdp(module: Any, lm: Any) -> Any:
    """``module`` under FSDP (``fully_shard``): each decoder layer a unit, then the whole; parameters,
    gradients and optimiser state are sharded across ranks and gathered per layer when used."""
    from torch.distributed.fsdp import fully_shard

    layers = getattr(getattr(lm, lm.base_model_prefix, None), "layers", None)
    if layers is None:
        raise ConfigError(
            f"{given('parallel', 'fsdp')}: no decoder layers found in {type(lm).__name__}; use ddp"
        )
    for layer in layers:
        fully_shard(layer)
    fully_shard(module)
    return module
