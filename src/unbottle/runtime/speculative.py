"""Speculative decoding with prompt lookup: more tokens per read of the weights, the same greedy output.

At batch 1 every decode step reads all the weights for one token. A drafter proposes a few tokens
cheaply; one forward pass over the last token and the draft scores them all at the cost of about one
step (the weights are read once), and the longest prefix the model agrees with is kept, plus the
model's own next token. With greedy decoding the output is token for token what plain greedy decoding
gives: a proposal is kept only when it *is* the model's argmax, so no accuracy guard is needed.

The drafter here is prompt lookup (as llama.cpp's lookup decoding and transformers'
``prompt_lookup_num_tokens``): the tokens that followed the latest earlier occurrence of the context's
last n-gram. It pays where the output repeats its input (summaries, edits, code, quoting a passage)
and costs a little where it doesn't (a rejected draft makes the step slightly longer). The draft length
adapts: one more after a fully accepted draft, down to what was accepted after a rejection.

Runs on eager torch models (their ``DynamicCache`` cropped) and on ONNX Runtime GenAI builds decoded
in one graph (GenAI's generator rewound) whose activations stay float (``accuracy_level=1``): with int8
activations quantized per call, a pass over a draft rounds them otherwise than single steps do and the
greedy tokens drift (SmolLM2's GGUF build: first difference after 6-20 tokens). Caches that can't be
rolled back (the torch-prefill hybrid's bound buffers, static caches of compiled models) are refused.
"""

from __future__ import annotations

from typing import Any

import torch

from unbottle.core.errors import ConfigError
from unbottle.runtime.caches import STATIC_CACHE_ATTR, cache_keyword

SPECULATIVE = ("lookup",)
MAX_NGRAM = 3
MAX_DRAFT = 8
FIRST_DRAFT = 4


def lookup_draft(context: list[int], length: int, max_ngram: int = MAX_NGRAM) -> list[int]:
    """Up to ``length`` tokens that followed the latest earlier occurrence of ``context``'s last
    n tokens, for n from ``max_ngram`` down to 1; [] when no n-gram recurs.

    Example:
        >>> lookup_draft([5, 6, 7, 9, 5, 6], 2)
        [7, 9]
    """
    if length < 1:
        return []
    for n in range(min(max_ngram, len(context) - 1), 0, -1):
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start : start + n] == tail:
                return context[start + n : start + n + length]
    return []


def check_speculative(model: Any, speculative: str | None) -> None:
    """Refuse an unknown drafter, or a model speculation can't run on exactly (before any work: the
    cache it would use is made once here to learn whether it rolls back)."""
    if speculative is None:
        return
    if speculative not in SPECULATIVE:
        raise ConfigError(f"speculative {speculative!r} given; allowed: {', '.join(SPECULATIVE)}")
    _cache(model, 8)


def _cache(model: Any, length: int) -> Any:
    """The cache a speculative decode rolls back: the model's own when it can rewind (GenAI's), else a
    ``DynamicCache``.

    Raises:
        ConfigError: int8 activations (a pass over a draft would pick other tokens), or a cache that
            can't be rolled back (the hybrid's bound buffers, a compiled model's static cache).
    """
    from transformers import DynamicCache

    if getattr(model, "steps_match_batches", True) is False:
        raise ConfigError(
            "this build quantizes activations to int8 on every call (accuracy_level=4), and a call over a "
            "draft rounds them otherwise than one-token steps do, so speculation would change the greedy "
            "tokens (SmolLM2: after 6-20 tokens); speculate on a build with accuracy_level=1 (float "
            "activations), e.g. genai:weights=gguf,accuracy_level=1"
        )
    fixed = ConfigError(
        "speculative decoding runs on eager torch models and ONNX Runtime GenAI builds decoded in one "
        f"graph; this model ({type(model).__name__}) keeps a cache that can't be rolled back: measure it "
        "without speculative decoding"
    )
    if getattr(model, STATIC_CACHE_ATTR, None) is not None:
        raise fixed
    own = getattr(model, "new_cache", None)
    if not callable(own):
        return DynamicCache(config=model.config)
    cache = own(length, 1)
    if not callable(getattr(cache, "rewind", None)):
        raise fixed
    return cache


def _drop(cache: Any, positions: int) -> None:
    """Forget the last ``positions`` tokens' keys and values."""
    if positions and callable(getattr(cache, "rewind", None)):
        cache.rewind(positions)
    elif positions:
        cache.crop(-positions)  # transformers 5: crop takes the (negative) number of positions to drop


def speculative_greedy(model: Any, prompt: Any, new_tokens: int, timer: Any) -> dict[str, Any]:
    """Greedy-decode ``new_tokens`` after ``prompt`` ``(1, T)`` with prompt-lookup drafts.

    Returns the tokens (``tokens``), ``ttft`` (prefill + first token), ``steps`` (seconds of each
    verification step), ``made`` (tokens each step produced), ``proposed`` and ``accepted`` (draft
    tokens offered and kept per step).
    """
    if prompt.shape[0] != 1:
        raise ConfigError(f"speculative decoding decodes one sequence; batch {prompt.shape[0]} given")
    cache = _cache(model, prompt.shape[1] + new_tokens + MAX_DRAFT + 1)
    kw = {cache_keyword(model): cache}
    context = prompt[0].tolist()
    out: dict[str, Any] = {"steps": [], "made": [], "proposed": [], "accepted": []}
    draft_len = FIRST_DRAFT
    with torch.inference_mode():
        timer.start()
        logits = model(input_ids=prompt, use_cache=True, **kw).logits
        context.append(int(logits[0, -1].argmax()))
        out["ttft"] = timer.stop()
        made = 1
        while made < new_tokens:
            timer.start()
            draft = lookup_draft(context, min(draft_len, new_tokens - made - 1))
            step = torch.tensor([[context[-1], *draft]], dtype=prompt.dtype)
            preds = model(input_ids=step, use_cache=True, **kw).logits[0].argmax(-1).tolist()
            kept = 0
            while kept < len(draft) and preds[kept] == draft[kept]:
                kept += 1
            _drop(cache, len(draft) - kept)  # every token but the newest keeps its keys and values
            context += [*draft[:kept], preds[kept]]
            out["steps"].append(timer.stop())
            made += kept + 1
            out["made"].append(kept + 1)
            out["proposed"].append(len(draft))
            out["accepted"].append(kept)
            if draft:
                draft_len = min(MAX_DRAFT, draft_len + 1) if kept == len(draft) else max(1, kept + 1)
    out["tokens"] = context[prompt.shape[1] :]
    return out


def speculative_once(model: Any, prompt: Any, new_tokens: int, timer: Any) -> dict[str, list[float]]:
    """One repeat of the decode scenario with prompt-lookup speculation, in the decode scenario's
    metrics (``ttft``, ``token_latency`` per token, ``tokens_per_s``, ``request_latency``) plus
    ``acceptance`` (draft tokens kept / offered) and ``tokens_per_step``."""
    run = speculative_greedy(model, prompt, new_tokens, timer)
    spent, made = sum(run["steps"]), sum(run["made"])
    offered = sum(run["proposed"])
    return {
        "ttft": [run["ttft"]],
        # one value per token after the first, as plain decoding gives: a step's time split over its tokens
        "token_latency": [s / m for s, m in zip(run["steps"], run["made"], strict=True) for _ in range(m)],
        "tokens_per_s": [made / spent] if spent else [],
        "request_latency": [run["ttft"] + spent],
        "acceptance": [sum(run["accepted"]) / offered] if offered else [0.0],
        "tokens_per_step": [made / len(run["steps"])] if run["steps"] else [1.0],
    }
