"""What one training run is: the model, its data and the settings every part of a run passes along."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from unbottle.training.loader import LoaderConfig
from unbottle.training.trainer import TrainConfig


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """One training run (or a distillation's, with ``model`` the teacher).

    Attributes:
        model: the model spec (a tiny config to train from scratch, or a real model).
        data: a text file or folder of ``.txt``; None: the packaged Austen novels.
        seq_len: tokens per sample.
        data_mode: ``cache`` (tokenised once) or ``on-the-fly`` (the naive pipeline).
        train: optimiser, precision, loss, checkpoints (``TrainConfig``).
        loader: batches and workers (``LoaderConfig``).
        output: the run folder (checkpoints, the saved model).
        resume: continue from the last checkpoint in ``output``.
    """

    model: str
    data: str | None = None
    seq_len: int = 128
    data_mode: str = "cache"
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    loader: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)
    output: Path = Path("trained")
    resume: bool = False

    def stored(self) -> dict[str, Any]:
        """The run config the store keeps for this run."""
        return {
            "model": self.model,
            "data": self.data,
            "seq_len": self.seq_len,
            "data_mode": self.data_mode,
            "train": self.train.to_dict(),
            "loader": self.loader.to_dict(),
            "output": str(self.output),
        }
