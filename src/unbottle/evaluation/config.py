"""What an evaluation run measures, validated before any model is loaded."""

from __future__ import annotations

import dataclasses

from unbottle.core.config import Config
from unbottle.core.errors import ConfigError
from unbottle.core.naming import given, opt


@dataclasses.dataclass(frozen=True)
class EvalConfig(Config):
    """How to evaluate a model.

    Attributes:
        eval_text: a UTF-8 file or folder of ``.txt`` files for perplexity; None: packaged Persuasion.
        eval_tokens: tokens of the text evaluated, the model's BOS counted once even when every
            window starts with it (its convention: ``convention.py``).
        window: tokens per model input, a per-window BOS included.
        stride: tokens between window starts (at most ``window``).
        task: a packaged BIG-bench task name or a task.json path; None: no multiple-choice eval.
        max_items: items evaluated from the task (a seeded subset); None: all.
        length_normalize: score multiple-choice options per token.
        reference: a model spec to measure agreement against; None: no agreement eval.
        batch_size: windows or sequences per forward pass.
        start_token: text tokens skipped before the evaluated ones: a later, disjoint part of the same
            text (``unbottle optimize`` verifies its winner on the part after the one it selected on).
        item_part: ``"selection"`` / ``"held_out"``: only that half of the task's seeded shuffle
            (``multiple_choice.choose_items``), the task's items split as the text is; None: all.
    """

    eval_text: str | None = None
    eval_tokens: int = 16384
    window: int = 512
    stride: int = 512
    task: str | None = None
    max_items: int | None = 200
    length_normalize: bool = False
    reference: str | None = None
    batch_size: int = 4
    start_token: int = 0
    item_part: str | None = None

    def __post_init__(self) -> None:
        if self.item_part not in (None, "selection", "held_out"):
            raise ConfigError(
                f"{given('item_part', self.item_part, quote=True)} given; allowed: selection, held_out"
            )
        if (
            isinstance(self.start_token, bool)
            or not isinstance(self.start_token, int)
            or self.start_token < 0
        ):
            raise ConfigError(
                f"{given('start_token', self.start_token, quote=True)} given; allowed: 0 or more"
            )
        for name in ("eval_tokens", "window", "stride", "max_items", "batch_size"):
            value = getattr(self, name)
            if value is None and name == "max_items":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{given(name, value, quote=True)} given; allowed: a positive integer")
        if self.window < 2:
            raise ConfigError(f"{given('window', self.window)} given; a window needs at least 2 tokens")
        if self.stride > self.window:
            raise ConfigError(
                f"{given('stride', self.stride)} is larger than {given('window', self.window)}, "
                "which would skip tokens; "
                f"use a stride of at most {self.window}"
            )
        if self.eval_tokens < self.window:
            raise ConfigError(
                f"{given('eval_tokens', self.eval_tokens)} is less than one {opt('window')} "
                f"({self.window}); raise {opt('eval_tokens')} or lower {opt('window')}"
            )
