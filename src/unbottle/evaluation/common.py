"""Checks and window bookkeeping every evaluator shares.

Windows are planned once, as plain numbers, so perplexity and agreement score exactly the same
tokens with exactly the same context, and a test can check the bookkeeping without a model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from unbottle.core.errors import EvalError
from unbottle.core.naming import given, opt
from unbottle.sources.base import Loaded


@dataclasses.dataclass(frozen=True)
class Window:
    """One model input, ``ids[:prefix] + ids[begin:end]``, that scores the tokens ``first_target .. end - 1``.

    Each scored token is predicted from the tokens before it inside the window. ``prefix`` is the
    number of stream-start tokens (the BOS) repeated before the span: 0 unless the model's convention
    is ``every-window``. Positions are those of the token stream (``TokenStream.ids``).
    """

    begin: int
    end: int
    first_target: int
    prefix: int = 0

    @property
    def length(self) -> int:
        """Tokens of the model input, prefix included."""
        return self.end - self.begin + self.prefix

    @property
    def n_scored(self) -> int:
        return self.end - self.first_target

    @property
    def first_position(self) -> int:
        """Input position of the first scored token."""
        return self.first_target - self.begin + self.prefix

    @property
    def sample_id(self) -> str:
        span = f"tokens[{self.begin}:{self.end}]"
        return f"prefix+{span}" if self.prefix else span


def plan_windows(n_tokens: int, window: int, stride: int, prefix: int = 0) -> list[Window]:
    """Strided windows over ``n_tokens`` tokens that score every token but the first exactly once.

    This is the strided scheme of Hugging Face's perplexity guide (``for begin in range(0, N,
    stride)``, labels of the prefix already scored by the previous window masked), with one change:
    consecutive windows overlap by at least one token (the step is ``min(stride, window - 1)``).
    With ``stride == window`` the guide's scheme never scores the first token of each window, since
    nothing in the window precedes it; here that token is the last input of the previous window's
    span and is scored by the next one, so ``sum(n_scored) == n_tokens - 1``.

    With ``prefix > 0`` (the ``every-window`` convention) the stream's first ``prefix`` tokens are
    that prefix, and every window is the prefix followed by ``window - prefix`` stream tokens from
    ``prefix`` on (step ``min(stride, window - prefix - 1)``, the same one-token overlap); the
    prefix is never scored and every token after it is, exactly once: ``sum(n_scored) == n_tokens -
    prefix``. Every model input still holds at most ``window`` tokens.
    """
    span = window - prefix
    assert span >= 2 and stride >= 1 and n_tokens >= window and prefix >= 0, (n_tokens, window, stride)
    step = min(stride, span - 1)
    windows: list[Window] = []
    prev_end = prefix
    for begin in range(prefix, n_tokens, step):
        end = min(begin + span, n_tokens)
        # Without a prefix a window's first token has nothing before it; with one it has the prefix.
        windows.append(Window(begin, end, max(prev_end, begin + (prefix == 0)), prefix))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def window_inputs(ids: Any, batch: list[Window]) -> Any:
    """The model inputs of windows of one length, ``(B, T)``: each one's prefix, then its span."""
    return torch.stack([torch.cat([ids[: w.prefix], ids[w.begin : w.end]]) for w in batch])  # (B, T)


def batches_of_equal_length(windows: list[Window], batch_size: int) -> list[list[Window]]:
    """Consecutive windows grouped so each batch has one length (no padding), at most batch_size."""
    batches: list[list[Window]] = []
    for w in windows:
        if batches and len(batches[-1]) < batch_size and batches[-1][0].length == w.length:
            batches[-1].append(w)
        else:
            batches.append([w])
    return batches


def check_sizes(**sizes: int | None) -> None:
    """Every given size is a positive integer (None means 'not set' and passes)."""
    for name, value in sizes.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EvalError(
                f"{given(name, value, quote=True)} given; allowed: a positive integer; "
                f"set {opt(name)} to 1 or more"
            )


def check_window(window: int, stride: int) -> None:
    if window < 2:
        raise EvalError(
            f"{given('window', window)} given; a window needs at least 2 tokens; "
            f"set {opt('window')} to 2 or more"
        )
    if stride > window:
        raise EvalError(
            f"{given('stride', stride)} is larger than {given('window', window)}, which would skip tokens "
            f"between windows; set {opt('stride')} to at most {window}"
        )


def require_causal_lm(loaded: Loaded, evaluator: str) -> Any:
    """The tokenizer of a causal LM, or an EvalError saying why the model can't be evaluated."""
    if loaded.info.task != "causal-lm":
        raise EvalError(
            f"{evaluator} needs a causal LM; {loaded.info.spec!r} is a {loaded.info.task} model; "
            "give a causal-LM model (e.g. llama, qwen2, gpt2)"
        )
    if loaded.tokenizer is None:
        raise EvalError(
            f"{evaluator} needs a tokenizer and {loaded.info.spec!r} was loaded without one; "
            "give a model folder with its tokenizer files, or a GGUF file that embeds a tokenizer"
        )
    return loaded.tokenizer


def check_positions(loaded: Loaded, length: int, what: str, fix: str) -> None:
    """``length`` tokens fit the model's position embeddings."""
    limit = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise EvalError(
            f"{what} is {length} tokens but {loaded.info.spec!r} has max_position_embeddings={limit}; {fix}"
        )


def model_vocab_size(model: Any) -> int:
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if size is None:
        size = model.get_output_embeddings().weight.shape[0]
    return int(size)


def device_of(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
