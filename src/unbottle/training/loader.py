"""The DataLoader: workers, prefetch, pinned memory, and a sampler that resumes mid-epoch.

The sampler's order is a permutation seeded by (seed, epoch), so it is the same in every process
and after a restart; a checkpoint stores ``(epoch, position)`` and the loader continues from the
next sample. With several ranks each takes every ``world``-th sample of the same permutation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from unbottle.core.config import Config, check_at_least


@dataclasses.dataclass(frozen=True)
class LoaderConfig(Config):
    """How batches are produced.

    Attributes:
        batch_size: samples per micro-batch (per rank).
        workers: DataLoader worker processes (0: load in the training process).
        prefetch: batches each worker prepares ahead (workers > 0 only).
        pin_memory: page-locked host memory for asynchronous host-to-device copies (GPU only).
        seed: the shuffling seed.
    """

    batch_size: int = 8
    workers: int = 0
    prefetch: int = 2
    pin_memory: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least(
            [
                ("batch_size", self.batch_size, 1),
                ("workers", self.workers, 0),
                ("prefetch", self.prefetch, 1),
            ]
        )


class ResumableSampler:
    """Indices of one epoch in a seeded order, starting at ``position``; this rank's share only."""

    def __init__(
        self, n: int, seed: int, epoch: int = 0, position: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        self.n, self.seed, self.epoch, self.position, self.rank, self.world = (
            n,
            seed,
            epoch,
            position,
            rank,
            world,
        )

    def order(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=gen).tolist()[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.position :])

    def __len__(self) -> int:
        return max(0, len(self.order()) - self.position)


def make_loader(dataset: Any, config: LoaderConfig, sampler: ResumableSampler) -> Any:
    """A torch DataLoader over ``dataset`` in ``sampler``'s order, whole batches only."""
    kwargs: dict[str, Any] = {}
    if config.workers > 0:
        kwargs.update(prefetch_factor=config.prefetch, persistent_workers=False)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=config.pin_memory,
        drop_last=True,
        **kwargs,
    )


def to_device(batches: Any, device: Any) -> Iterator[Any]:
    """``batches`` on ``device``. On a GPU each batch is copied from pinned memory on a side stream
    while the previous one is being used (asynchronous host-to-device copies)."""
    if device.type != "cuda":
        yield from batches
        return
    stream = torch.cuda.Stream(device)
    ahead = None
    for batch in batches:
        host = batch if batch.is_pinned() else batch.pin_memory()
        with torch.cuda.stream(stream):
            copied = host.to(device, non_blocking=True)
        if ahead is not None:
            yield ahead
        torch.cuda.current_stream(device).wait_stream(stream)
        copied.record_stream(torch.cuda.current_stream(device))
        ahead = copied
    if ahead is not None:
        yield ahead
