"""The settings of ``unbottle.train`` and ``unbottle.distill``, by field: what a user gives, checked
once before any model loads, and turned into the ``TrainSpec`` a run passes along."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from unbottle.core.config import Config, check_at_least
from unbottle.core.errors import ConfigError
from unbottle.core.naming import given, opt, turn_on
from unbottle.core.paths import check_writable_folder
from unbottle.training.loader import LoaderConfig
from unbottle.training.spec import TrainSpec
from unbottle.training.trainer import TrainConfig

DATA_MODES = ("cache", "on-the-fly")


def check_common(seq_len: int, lr: float, checkpoint_every: int, eval_every: int = 0) -> None:
    """The checks ``train`` and ``distill`` share; a learning rate must be a finite positive number."""
    check_at_least(
        [("seq_len", seq_len, 2), ("checkpoint_every", checkpoint_every, 0), ("eval_every", eval_every, 0)]
    )
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"{given('lr', lr, quote=True)} given; allowed: a finite number > 0, e.g. 3e-4")


@dataclasses.dataclass(frozen=True)
class TrainSettings(Config):
    """What ``unbottle.train`` takes (the CLI's ``train`` flags, by field).

    Attributes:
        data: a text file or folder of ``.txt``; None: the packaged Austen novels.
        seq_len: tokens per sample (2 or more; no more than the model's positions).
        batch_size: samples per micro-batch, or ``"auto"`` (the largest that fits ``memory_budget``).
        global_batch: samples per optimiser step (sets the accumulation); None: ``grad_accum``.
        memory_budget: MiB a step may add to the loaded model, for ``batch_size="auto"`` (None: 80%
            of the free memory).
        grad_accum, max_steps, lr, precision, loss, compile, checkpointing, parallel, device,
            eval_every, checkpoint_every: as ``TrainConfig``.
        data_mode: ``cache`` (tokenised once) or ``on-the-fly`` (the naive pipeline).
        workers: DataLoader worker processes.
        output: the run folder; None: ``trained/<model name>``.
        resume: continue from the last checkpoint in ``output``.
        compare: strategies to A/B instead of one run (``("naive", "base", "bf16")``; first = reference).
        rounds, segment_steps: the strategy A/B's rounds and steps per strategy per round.
    """

    data: str | None = None
    seq_len: int = 128
    batch_size: int | str = 8
    global_batch: int | None = None
    memory_budget: float | None = None
    grad_accum: int = 1
    max_steps: int = 50
    lr: float = 3e-4
    precision: str = "fp32"
    loss: str = "full"
    compile: bool = False
    checkpointing: bool = False
    parallel: str = "ddp"
    device: str = "cpu"
    data_mode: str = "cache"
    workers: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    output: str | None = None
    resume: bool = False
    compare: tuple[str, ...] | None = None
    rounds: int = 3
    segment_steps: int = 5

    def __post_init__(self) -> None:
        check_common(self.seq_len, self.lr, self.checkpoint_every, self.eval_every)
        if self.data_mode not in DATA_MODES:
            raise ConfigError(
                f"{given('data_mode', self.data_mode, quote=True)} given; allowed: {', '.join(DATA_MODES)}"
            )
        if self.batch_size != "auto":
            check_at_least([("batch_size", self.batch_size, 1)])
        if self.global_batch is not None:
            check_at_least([("global_batch", self.global_batch, 1)])
        if self.memory_budget is not None and not (
            isinstance(self.memory_budget, int | float) and self.memory_budget > 0
        ):
            raise ConfigError(f"{given('memory_budget', self.memory_budget)} given; allowed: MiB > 0")
        if self.compare is not None:
            check_at_least([("rounds", self.rounds, 2), ("segment_steps", self.segment_steps, 1)])
        self.train_config()  # precision, loss, parallel, device: checked here, before anything loads

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            max_steps=self.max_steps, grad_accum=self.grad_accum, lr=self.lr,
            warmup_steps=max(1, self.max_steps // 10), precision=self.precision, loss=self.loss,
            compile=self.compile, checkpointing=self.checkpointing, parallel=self.parallel,
            device=self.device, checkpoint_every=self.checkpoint_every, eval_every=self.eval_every,
        )  # fmt: skip

    def spec(self, model: str) -> TrainSpec:
        """The run these settings describe; refused if its folder holds checkpoints not resumed."""
        auto = self.batch_size == "auto"
        loader = LoaderConfig(batch_size=1 if auto else int(self.batch_size), workers=self.workers)
        run_dir = Path(self.output) if self.output else Path("trained") / Path(model.rstrip("/")).name
        check_writable_folder(run_dir)
        if (run_dir / "latest").exists() and not self.resume:
            raise ConfigError(
                f"{run_dir} holds checkpoints; {turn_on('resume')} to continue them or choose another "
                f"{opt('output', flag='-o')}"
            )
        return TrainSpec(model, self.data, self.seq_len, self.data_mode, self.train_config(), loader,
                         run_dir, self.resume)  # fmt: skip

    def batching(self) -> dict[str, Any]:
        """``batch_size="auto"`` and ``global_batch`` as ``session.run_training`` takes them."""
        return {
            "auto": self.batch_size == "auto",
            "global": self.global_batch,
            "budget_mib": self.memory_budget,
        }


@dataclasses.dataclass(frozen=True)
class DistillRun(Config):
    """What ``unbottle.distill`` takes (the CLI's ``distill`` flags, by field).

    Attributes:
        student: ``half`` | ``layers=N[,intermediate=M]`` (built from the teacher's layers) | a model.
        alpha: weight of the KL term (1 - alpha: cross-entropy); temperature: its softmax temperature.
        baseline: also train the same student without distillation (the measured gain).
        eval_text, eval_tokens, window: the held-out perplexity (None: the packaged *Persuasion*).
        data, seq_len, batch_size, grad_accum, max_steps, lr, checkpoint_every, resume: as
            ``TrainSettings``; precision: fp32 or bf16; output: None → ``distilled/<teacher name>``.
    """

    student: str = "half"
    data: str | None = None
    seq_len: int = 128
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 100
    lr: float = 3e-4
    alpha: float = 0.5
    temperature: float = 2.0
    precision: str = "fp32"
    baseline: bool = True
    eval_text: str | None = None
    eval_tokens: int = 8192
    window: int = 512
    checkpoint_every: int = 0
    output: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        check_common(self.seq_len, self.lr, self.checkpoint_every)
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"{given('precision', self.precision, quote=True)} given; allowed: fp32, bf16")
        check_at_least([("batch_size", self.batch_size, 1), ("eval_tokens", self.eval_tokens, 2),
                        ("window", self.window, 2)])  # fmt: skip
        if not (0 <= self.alpha <= 1) or not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(
                f"{given('alpha', self.alpha)} / {given('temperature', self.temperature)} given; "
                "allowed: 0 <= alpha <= 1, temperature > 0"
            )
        self.train_config()

    def train_config(self) -> TrainConfig:
        return TrainConfig(max_steps=self.max_steps, grad_accum=self.grad_accum, lr=self.lr,
                           precision=self.precision, warmup_steps=max(1, self.max_steps // 10),
                           checkpoint_every=self.checkpoint_every)  # fmt: skip

    def spec(self, teacher: str) -> TrainSpec:
        """The run; refused if its folder is not empty and not resumed."""
        run_dir = Path(self.output) if self.output else Path("distilled") / Path(teacher.rstrip("/")).name
        check_writable_folder(run_dir)
        if run_dir.exists() and any(run_dir.iterdir()) and not self.resume:
            raise ConfigError(
                f"{run_dir} is not empty; {turn_on('resume')} to continue it or choose another "
                f"{opt('output', flag='-o')}"
            )
        return TrainSpec(teacher, self.data, self.seq_len, "cache", self.train_config(),
                         LoaderConfig(batch_size=self.batch_size), run_dir, self.resume)  # fmt: skip
