"""Masked-LM pseudo-perplexity: how well an encoder with its masked-LM head still predicts its text.

A masked LM has no left-to-right likelihood; its pseudo-log-likelihood (Salazar et al., 2020) scores
each token with the head's log-probability of it when that token is masked and the rest of the window
is seen. Masking one token per forward costs one pass per token; here every ``spread``-th position is
masked together (spread 8 masks 12.5% of a window per pass, close to the 15% BERT-class models were
trained at), so each token is scored exactly once in ``spread`` passes per window. The score of a
window is its mean negative log-likelihood; pseudo-perplexity is exp(total NLL / scored tokens), lower
is better, and the per-window scores pair two models window by window.

Only for checkpoints that carry their masked-LM head (``ModelInfo.head``): a sentence encoder saved
without it loads with a random head, whose pseudo-perplexity means nothing.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from unbottle.core.errors import EvalError
from unbottle.evaluation.base import EvalResult
from unbottle.evaluation.embedding import framing, text_windows
from unbottle.sources.base import Loaded

SPREAD = 8  # every 8th position masked per pass: 12.5% of a window


def pseudo_perplexity(
    loaded: Loaded,
    text: str,
    source: str = "text",
    eval_tokens: int = 4096,
    window: int = 128,
    batch_size: int = 4,
    start_token: int = 0,
    spread: int = SPREAD,
) -> EvalResult:
    """Pseudo-perplexity of ``loaded``'s masked-LM head over windows of ``window`` tokens (framed by
    the tokenizer's [CLS]/[SEP] where it has them) of ``eval_tokens`` tokens of ``text`` from
    ``start_token`` on; random ids, seeded, for a model without a tokenizer.

    Raises:
        EvalError: the checkpoint has no masked-LM head, ``spread`` < 1, or the text gives no window.
    """
    if not loaded.info.head:
        raise EvalError(
            f"{loaded.info.spec!r} was saved without its masked-LM head (transformers gave it a random "
            "one), so its pseudo-perplexity means nothing; compare its embeddings with a reference instead"
        )
    if spread < 1:
        raise EvalError(f"spread {spread} given; mask every n-th position with n >= 1")
    frame = framing(loaded.tokenizer)
    w = text_windows(loaded, text, source, eval_tokens, window, start_token, frame)
    window = w.window
    began = time.perf_counter()
    mask = _mask_id(loaded.tokenizer)
    nll: list[float] = []
    scored = range(len(frame[0]), len(frame[0]) + window)
    for batch in w.batches(batch_size):
        nll += _window_nll(loaded.model, batch, scored, mask, spread)
    return EvalResult(
        evaluator="pseudo-perplexity",
        metric="pseudo_perplexity",
        value=math.exp(sum(nll) / len(nll)),  # windows are equal in length: the mean is the pooled mean
        higher_is_better=False,
        score_name="window_pseudo_nll",
        score_unit="nats/token",
        scores=nll,
        sample_ids=w.sample_ids(),
        weights=[float(window)] * len(w.starts),
        seconds=time.perf_counter() - began,
        details={
            "source": source,
            "eval_tokens": len(w.ids),
            "window": window,
            "spread": spread,
            "mask_token_id": mask,
            "framed": bool(frame[0] or frame[1]),
        },  # fmt: skip
    )


def _window_nll(model: Any, batch: torch.Tensor, scored: range, mask: int, spread: int) -> list[float]:
    """Mean NLL per row of ``batch`` over the ``scored`` positions, each masked in one of ``spread``
    passes together with every ``spread``-th position after it."""
    total = torch.zeros(batch.shape[0], dtype=torch.float64)
    positions = torch.tensor(list(scored))
    with torch.inference_mode():
        for offset in range(min(spread, len(positions))):
            where = positions[offset::spread]
            masked = batch.clone()
            masked[:, where] = mask
            logits = model(input_ids=masked, attention_mask=torch.ones_like(masked)).logits
            logp = torch.log_softmax(logits[:, where].double(), dim=-1)
            total -= logp.gather(-1, batch[:, where].unsqueeze(-1)).squeeze(-1).sum(dim=1)
    return (total / len(positions)).tolist()


def _mask_id(tokenizer: Any) -> int:
    """The tokenizer's [MASK] id; its unknown-token id (or 0) for one without a mask token (test models)."""
    for name in ("mask_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0
