"""Which special tokens a model expects around its text, read from its own tokenizer.

Some families (Gemma) are trained with BOS at the start of every sequence and score text without
it as if it were noise (Gemma 3 270M: perplexity 87 instead of 35); others (SmolLM2) add nothing.
The tokenizer knows: what ``tokenizer(text)`` adds beyond ``tokenizer(text, add_special_tokens=False)``
is the model's convention, and every evaluator applies it the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

BosMode = Literal["every-window", "stream-start", "none"]

# Plain words and punctuation: every tokenizer encodes them without unknown or special tokens.
PROBE = "The quick brown fox jumps over the lazy dog."


@dataclasses.dataclass(frozen=True)
class BosConvention:
    """How evaluation sequences start, following the tokenizer.

    Attributes:
        mode: ``every-window``: the tokenizer adds ``prefix`` to every sequence, so every window
            (and multiple-choice item) starts with it; ``stream-start``: it adds nothing, and its BOS
            starts the token stream once (each multiple-choice item is a stream of its own); ``none``:
            it adds nothing and has no BOS.
        prefix: the ids that start each window (``every-window``) or the stream (``stream-start``:
            the BOS alone); never scored.
        suffix: ids the tokenizer appends to every sequence (e.g. an EOS). Recorded, never added:
            windows cut the text mid-sentence, so an end-of-sequence token there is not in the text.
    """

    mode: BosMode
    prefix: tuple[int, ...]
    suffix: tuple[int, ...] = ()

    @property
    def window_prefix(self) -> tuple[int, ...]:
        """The ids put before every window: the prefix in ``every-window`` mode, else nothing."""
        return self.prefix if self.mode == "every-window" else ()

    def details(self) -> dict[str, Any]:
        """The convention as result details; ``bos_prepended`` is the key older reports read."""
        return {
            "bos": self.mode,
            "prefix_ids": list(self.prefix),
            "suffix_ids": list(self.suffix),
            "bos_prepended": bool(self.prefix),
        }


def detect_convention(tokenizer: Any) -> BosConvention:
    """The special tokens ``tokenizer`` adds around every sequence, found on a probe sentence.

    Works for fast and slow tokenizers (and wrappers that only forward ``__call__``): it compares
    the probe's ids with and without ``add_special_tokens``, so whatever post-processor or
    ``add_bos_token`` setting the tokenizer has is what counts. A tokenizer that adds no prefix
    keeps the stream-start convention (its BOS once, before the first text token).
    """
    plain = _ids(tokenizer, PROBE, add_special_tokens=False)
    full = _ids(tokenizer, PROBE, add_special_tokens=True)
    prefix, suffix = _added(full, plain, set(getattr(tokenizer, "all_special_ids", None) or ()))
    if prefix:
        return BosConvention("every-window", prefix, suffix)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        return BosConvention("stream-start", (int(bos),), suffix)
    return BosConvention("none", (), suffix)


def _added(full: list[int], plain: list[int], specials: set[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prefix, suffix): the ids of ``full`` before and after ``plain``.

    If ``plain`` is not a contiguous run of ``full`` (a tokenizer that also re-tokenises the text
    when it adds specials), the leading and trailing special ids of ``full`` are taken instead.
    """
    n = len(plain)
    for i in range(len(full) - n + 1):
        if full[i : i + n] == plain:
            return tuple(full[:i]), tuple(full[i + n :])
    lead = _run_length(full, specials)
    trail = _run_length(full[lead:][::-1], specials)
    return tuple(full[:lead]), tuple(full[len(full) - trail :])


def _run_length(ids: Sequence[int], members: set[int]) -> int:
    n = 0
    while n < len(ids) and ids[n] in members:
        n += 1
    return n


def _ids(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]]
