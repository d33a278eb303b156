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


def launch(nproc: int, argv: list[str]) -> int:
    """Run the workers through torchrun on this machine; return torchrun's exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "unbottle.cli", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.call(cmd, env=env)


def init_from_env() -> tuple[int, int]:
    """(rank, world size); joins the process group when torchrun started this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world
