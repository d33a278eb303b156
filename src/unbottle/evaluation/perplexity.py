"""Corpus perplexity over strided windows, kept per window so two models compare pairwise.

A single perplexity number cannot tell a real regression from noise; the per-window mean NLLs can
(paired bootstrap over the same windows). The corpus value is exp(total NLL / total scored tokens),
the usual token-weighted perplexity, and each window's weight is its scored-token count. Windows
follow the model's own BOS convention (``convention.py``): a model whose tokenizer starts every
sequence with BOS gets it at the start of every window, never scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from unbottle.core.naming import given, opt
from unbottle.evaluation.base import EvalResult
from unbottle.evaluation.common import (
    Window,
    batches_of_equal_length,
    check_positions,
    check_sizes,
    check_window,
    device_of,
    plan_windows,
    require_causal_lm,
    window_inputs,
)
from unbottle.evaluation.corpus import load_text, resolve_text, token_stream
from unbottle.sources.base import Loaded

__all__ = ["load_text", "perplexity", "window_nll"]


def perplexity(
    loaded: Loaded,
    text: str | None = None,
    source: str | Path | None = None,
    eval_tokens: int = 16384,
    window: int = 512,
    stride: int = 512,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    start_token: int = 0,
) -> EvalResult:
    """Perplexity of a causal LM on a text, with the mean NLL of every window kept as a sample.

    Args:
        loaded: the model and its tokenizer.
        text: the text to evaluate; default: the packaged Persuasion corpus.
        source: with ``text``, a label recorded as the corpus description; without it, a UTF-8 file
            or a folder of ``.txt`` files to read (see ``load_text``).
        eval_tokens: tokens of the stream evaluated: the prefix (BOS) once plus the text's first
            ``eval_tokens - len(prefix)`` tokens, each of which is scored. A per-window prefix
            (``every-window``) is repeated in each model input but not counted again.
        window: tokens per model input, a per-window prefix included.
        stride: tokens between window starts (at most ``window``; see ``plan_windows``).
        batch_size: windows per forward pass; start_token: text tokens skipped first (a held-out part).
        progress: called as ``progress(windows_done, windows_total)``, first with 0, then after
            every batch.

    Returns:
        ``metric="perplexity"``; scores are per-window mean NLL in nats/token, weights the number of
        tokens each window scored.

    Raises:
        EvalError: a size is invalid, the model can't be evaluated, or the text is missing, empty,
            not UTF-8 or shorter than one window.
    """
    start = time.perf_counter()
    check_sizes(eval_tokens=eval_tokens, window=window, stride=stride, batch_size=batch_size)
    check_window(window, stride)
    tokenizer = require_causal_lm(loaded, "perplexity")
    fix = f"set {opt('window')} to {_limit(loaded)} or less"
    check_positions(loaded, window, given("window", window), fix)
    text, description = resolve_text(text, None if source is None else str(source))
    stream = token_stream(tokenizer, text, eval_tokens, window, description, start_token)
    windows = plan_windows(len(stream.ids), window, stride, stream.window_prefix)
    with torch.inference_mode():
        sums = window_nll(loaded.model, stream.ids, windows, batch_size, progress)
    counts, total_nll = [w.n_scored for w in windows], math.fsum(sums)
    return EvalResult(
        evaluator="perplexity",
        metric="perplexity",
        value=math.exp(total_nll / sum(counts)),
        higher_is_better=False,
        score_name="window_nll",
        score_unit="nats/token",
        scores=[s / c for s, c in zip(sums, counts, strict=True)],
        sample_ids=[w.sample_id for w in windows],
        weights=[float(c) for c in counts],
        seconds=time.perf_counter() - start,
        details=_details(description, stream, windows, (window, stride, batch_size), total_nll),
    )


def _details(
    description: str, stream: Any, windows: list[Any], sizes: tuple[int, int, int], total_nll: float
) -> dict[str, Any]:
    """What a perplexity run scored: the text, its windows (``sizes``: window, stride, batch size) and
    its tokenisation."""
    window, stride, batch_size = sizes
    return {
        "corpus": description,
        "eval_tokens": len(stream.ids),
        "start_token": stream.start,
        "eval_tokens_requested": stream.requested,
        "text_tokens": stream.available,
        "window": window,
        "stride": stride,
        "step": windows[1].begin - windows[0].begin if len(windows) > 1 else 0,
        "n_windows": len(windows),
        "scored_tokens": sum(w.n_scored for w in windows),
        "total_nll_nats": total_nll,
        **stream.convention.details(),
        "batch_size": batch_size,
    }


def window_nll(
    model: Any,
    ids: Any,
    windows: list[Window],
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Summed NLL (nats, float32 logits) of each window's scored tokens, in window order.

    Args:
        model: a causal LM returning ``.logits``.
        ids: the token stream, shape ``(N,)``; a window's prefix is ``ids[:prefix]``.
        windows: from ``plan_windows``.
        batch_size: windows per forward; only windows of equal length share a batch.
        progress: called as ``progress(windows_done, windows_total)``, first with 0.
    """
    device = device_of(model)
    sums: list[float] = []
    if progress is not None:
        progress(0, len(windows))
    for batch in batches_of_equal_length(windows, batch_size):
        x = window_inputs(ids, batch).to(device)  # (B, T)
        logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
        B, T, V = logits.shape
        nll = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, V), x[:, 1:].reshape(-1), reduction="none"
        ).view(B, T - 1)  # (B, T-1): nll[:, j] is the NLL of the token at in-window position j + 1
        position = torch.arange(1, T, device=device)  # (T-1,)
        first = torch.tensor([w.first_position for w in batch], device=device)  # (B,)
        scored = position[None, :] >= first[:, None]  # (B, T-1)
        sums.extend(torch.where(scored, nll, 0.0).double().sum(dim=1).tolist())
        if progress is not None:
            progress(len(sums), len(windows))
    return sums


def _limit(loaded: Loaded) -> Any:
    return getattr(loaded.model.config, "max_position_embeddings", "?")
