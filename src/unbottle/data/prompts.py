"""Prompt token ids for benchmarks: real text where a tokenizer exists, seeded random ids otherwise.

Real text keeps the timing representative (e.g. of any data-dependent paths) and costs nothing
extra; each batch row gets its own window so rows differ, and all rows share one length so no
padding enters the measurement.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from unbottle.data import EVAL_TEXT, packaged_text

CORPUS = EVAL_TEXT  # benchmark prompts read the evaluation text: timing, not scoring


@functools.lru_cache(maxsize=4)
def _corpus_ids(tokenizer: Any) -> tuple[int, ...]:
    return tuple(tokenizer(packaged_text(CORPUS)[:400_000], add_special_tokens=False)["input_ids"])


def make_prompts(tokenizer: Any, vocab_size: int, batch_size: int, length: int, seed: int = 0) -> Any:
    """Token ids of shape ``(batch_size, length)``.

    Args:
        tokenizer: a transformers tokenizer, or None for random ids.
        vocab_size: the model's vocabulary size (bounds random ids).
        batch_size: rows.
        length: tokens per row.
        seed: selects the windows (or the random ids).
    """
    gen = torch.Generator().manual_seed(seed)
    if tokenizer is None:
        return torch.randint(0, vocab_size, (batch_size, length), generator=gen)
    ids = torch.tensor(_corpus_ids(tokenizer), dtype=torch.long)
    while ids.numel() < length + batch_size:
        ids = torch.cat([ids, ids])
    starts = torch.randint(0, ids.numel() - length, (batch_size,), generator=gen)
    rows = torch.stack([ids[s : s + length] for s in starts.tolist()])  # (B, T)
    return rows.clamp_(max=vocab_size - 1)
