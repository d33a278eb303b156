"""How closely a candidate model (quantised, pruned, ...) follows its reference, token by token.

Perplexity can stay flat while the next-token distribution drifts; KL divergence and top-1
agreement on the perplexity windows see that drift directly, and greedy match length shows when it
starts to change generated text. All three keep per-window or per-prompt samples for paired stats.
Windows and prompts follow the reference's BOS convention, exactly as perplexity's windows do.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import torch

from unbottle.core.errors import EvalError
from unbottle.core.naming import given, opt
from unbottle.evaluation.base import EvalResult
from unbottle.evaluation.common import (
    Window,
    batches_of_equal_length,
    check_positions,
    check_sizes,
    check_window,
    device_of,
    model_vocab_size,
    plan_windows,
    require_causal_lm,
    window_inputs,
)
from unbottle.evaluation.corpus import resolve_text, token_stream
from unbottle.sources.base import Loaded

__all__ = ["agreement", "check_same_vocab"]


def agreement(
    candidate: Loaded,
    reference: Loaded,
    text: str | None = None,
    eval_tokens: int = 4096,
    window: int = 512,
    n_prompts: int = 8,
    prompt_length: int = 32,
    new_tokens: int = 32,
    batch_size: int = 4,
    stride: int | None = None,
) -> list[EvalResult]:
    """KL(reference || candidate), top-1 agreement and greedy match length of two models.

    Args:
        candidate: the model being checked.
        reference: the model it should agree with; must share the candidate's vocabulary.
        text: the text whose windows are scored; default: the packaged Persuasion corpus.
        eval_tokens: tokens of the stream evaluated (the prefix counted once), as for perplexity.
        window: tokens per model input, a per-window prefix included.
        n_prompts: greedy-generation prompts, taken at evenly spaced offsets of the token stream.
        prompt_length: tokens per prompt, a per-window prefix included.
        new_tokens: tokens each model generates greedily per prompt.
        batch_size: windows or prompts per forward pass.
        stride: tokens between window starts; default ``window`` (the perplexity default), so the
            windows pair with a perplexity run of the same settings.

    Returns:
        ``[kl_divergence, top1_agreement, greedy_match_length]`` results.

    Raises:
        EvalError: the vocabularies differ, a size is invalid, or the text is unusable.
    """
    start = time.perf_counter()
    stride = window if stride is None else stride
    sizes = dict(eval_tokens=eval_tokens, window=window, stride=stride, n_prompts=n_prompts)
    check_sizes(**sizes, prompt_length=prompt_length, new_tokens=new_tokens, batch_size=batch_size)
    check_window(window, stride)
    stream, description = _stream(candidate, reference, text, eval_tokens, window, prompt_length, new_tokens)
    windows = plan_windows(len(stream.ids), window, stride, stream.window_prefix)
    details = {"candidate": candidate.info.spec, "reference": reference.info.spec, "corpus": description,
               "eval_tokens": len(stream.ids), "eval_tokens_requested": eval_tokens, "window": window,
               "stride": stride, "n_windows": len(windows), "scored_tokens": sum(w.n_scored for w in windows),
               **stream.convention.details(), "batch_size": batch_size}  # fmt: skip
    with torch.inference_mode():
        kl, top1 = _window_agreement(candidate.model, reference.model, stream.ids, windows, batch_size)
        seconds = time.perf_counter() - start
        greedy = _greedy_result(candidate, reference, stream.ids, stream.window_prefix, n_prompts,
                                prompt_length, new_tokens, batch_size)  # fmt: skip
    greedy.details = {**details, **greedy.details}
    return [
        _per_window(metric, sums, windows, higher, unit, seconds, details)
        for metric, sums, higher, unit in (
            ("kl_divergence", kl, False, "nats/token"),
            ("top1_agreement", top1, True, "fraction"),
        )
    ] + [greedy]


def _stream(
    candidate: Loaded, reference: Loaded, text: str | None, eval_tokens: int, window: int,
    prompt_length: int, new_tokens: int,
) -> tuple[Any, str]:  # fmt: skip
    """The token stream both models are scored on, and its description; refused when the two models
    can't be compared or the sizes don't fit them or the text."""
    tokenizer = require_causal_lm(reference, "agreement")
    require_causal_lm(candidate, "agreement")
    check_same_vocab(candidate, reference)
    for loaded in (candidate, reference):
        check_positions(loaded, window, given("window", window), f"lower {opt('window')}")
        check_positions(loaded, prompt_length + new_tokens, "prompt_length + new_tokens", "shorten either")
    text, description = resolve_text(text, None)
    stream = token_stream(tokenizer, text, eval_tokens, window, description)
    lowest, highest = stream.window_prefix + 1, len(stream.ids)
    if not lowest <= prompt_length <= highest:
        raise EvalError(
            f"prompt_length={prompt_length} given; with {highest} tokens to evaluate and "
            f"{stream.window_prefix} prefix token(s) per prompt it must lie between {lowest} and {highest}; "
            f"change prompt_length or raise {opt('eval_tokens')}"
        )
    return stream, description


def check_same_vocab(candidate: Loaded, reference: Loaded) -> None:
    """Refuse two models whose tokenizers or output vocabularies differ: their distributions don't align."""
    sizes = [model_vocab_size(m.model) for m in (candidate, reference)]
    vocabs = [m.tokenizer.get_vocab() for m in (candidate, reference)]
    if sizes[0] != sizes[1] or vocabs[0] != vocabs[1]:
        what = "tokenizer vocabularies" if sizes[0] == sizes[1] else "model vocabulary sizes"
        raise EvalError(
            f"candidate {candidate.info.spec!r} (model vocab {sizes[0]}, tokenizer vocab {len(vocabs[0])}) "
            f"and reference {reference.info.spec!r} (model vocab {sizes[1]}, tokenizer vocab "
            f"{len(vocabs[1])}) have different {what}, so their next-token distributions don't align; "
            "compare a model with a reference of the same family and tokenizer"
        )


def _per_window(
    metric: str,
    sums: list[float],
    windows: list[Window],
    higher: bool,
    unit: str,
    seconds: float,
    details: dict[str, Any],
) -> EvalResult:
    counts = [w.n_scored for w in windows]
    return EvalResult(
        evaluator="agreement",
        metric=metric,
        value=sum(sums) / sum(counts),
        higher_is_better=higher,
        score_name=f"window_{metric}",
        score_unit=unit,
        scores=[s / c for s, c in zip(sums, counts, strict=True)],
        sample_ids=[w.sample_id for w in windows],
        weights=[float(c) for c in counts],
        seconds=seconds,
        details=dict(details),
    )


def _window_agreement(
    candidate: Any, reference: Any, ids: Any, windows: list[Window], batch_size: int
) -> tuple[list[float], list[float]]:
    """Per window: summed KL(ref || cand) in nats and count of equal argmaxes over its scored tokens."""
    kl_sums: list[float] = []
    agree_sums: list[float] = []
    for batch in batches_of_equal_length(windows, batch_size):
        x = window_inputs(ids, batch)  # (B, T)
        ref_logits = reference(input_ids=x.to(device_of(reference)), use_cache=False).logits  # (B, T, V)
        cand_logits = candidate(input_ids=x.to(device_of(candidate)), use_cache=False).logits
        for r, w in enumerate(batch):
            # Row r, positions predicting the window's scored tokens: (S, V) with S = w.n_scored.
            rows = slice(w.first_position - 1, w.length - 1)
            ref_logp = torch.log_softmax(ref_logits[r, rows].float(), dim=-1)
            cand_logp = torch.log_softmax(cand_logits[r, rows].float().to(ref_logp.device), dim=-1)
            kl = (ref_logp.exp() * (ref_logp - cand_logp)).sum(dim=-1)  # (S,)
            kl_sums.append(kl.double().sum().item())
            agree_sums.append(float((ref_logp.argmax(-1) == cand_logp.argmax(-1)).sum().item()))
    return kl_sums, agree_sums


def _greedy_result(
    candidate: Loaded,
    reference: Loaded,
    ids: Any,
    prefix: int,
    n_prompts: int,
    prompt_length: int,
    new_tokens: int,
    batch_size: int,
) -> EvalResult:
    """Greedy match length on ``n_prompts`` prompts at evenly spaced offsets of the token stream.

    With a per-window prefix (``prefix > 0``) each prompt is the prefix then ``prompt_length -
    prefix`` stream tokens taken after the stream's own prefix.
    """
    start = time.perf_counter()
    span = prompt_length - prefix
    starts = torch.linspace(prefix, len(ids) - span, n_prompts).round().long().tolist()
    spans = [Window(s, s + span, s + span, prefix) for s in starts]
    prompts = window_inputs(ids, spans)  # (P, L)
    matches = _greedy_matches(candidate.model, reference.model, prompts, new_tokens, batch_size)
    return EvalResult(
        evaluator="agreement",
        metric="greedy_match_length",
        value=sum(matches) / len(matches),
        higher_is_better=True,
        score_name="match_length",
        score_unit="tokens",
        scores=[float(m) for m in matches],
        sample_ids=[f"prompt{k}:{w.sample_id}" for k, w in enumerate(spans)],
        seconds=time.perf_counter() - start,
        details={"n_prompts": n_prompts, "prompt_length": prompt_length, "new_tokens": new_tokens},
    )


def _greedy_matches(
    candidate: Any, reference: Any, prompts: Any, new_tokens: int, batch_size: int
) -> list[int]:
    """Per prompt: how many leading greedy tokens of the two models are equal."""
    matches: list[int] = []
    for b in range(0, len(prompts), batch_size):
        chunk = prompts[b : b + batch_size]
        differs = _greedy(candidate, chunk, new_tokens) != _greedy(reference, chunk, new_tokens)  # (B, N)
        matches.extend(row.index(True) if True in row else new_tokens for row in differs.tolist())
    return matches


def _greedy(model: Any, prompts: Any, new_tokens: int) -> Any:
    """Greedy-decode ``new_tokens`` tokens after each prompt with the KV cache: (B, new_tokens) on CPU."""
    from transformers import DynamicCache

    params = inspect.signature(model.forward).parameters
    # transformers 5.2x renamed ``past_key_values`` to ``cache``; the cache object updates in place.
    kw: dict[str, Any] = {
        "cache" if "cache" in params else "past_key_values": DynamicCache(config=model.config)
    }
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1
    out = model(input_ids=prompts.to(device_of(model)), use_cache=True, **kw)
    tokens = [out.logits[:, -1].argmax(-1)]  # each (B,)
    for _ in range(new_tokens - 1):
        out = model(input_ids=tokens[-1][:, None], use_cache=True, **kw)
        tokens.append(out.logits[:, -1].argmax(-1))
    return torch.stack(tokens, dim=1).cpu()
