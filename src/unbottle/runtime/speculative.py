"""Speculative decoding: more tokens per read of the weights, the same output.

At batch 1 every decode step reads all the weights for one token. A drafter proposes a few tokens
cheaply; one forward pass over the last token and the draft scores them all at the cost of about one
step (the weights are read once), and the longest prefix the model agrees with is kept, plus the
model's own next token.

- **Greedy**: a proposal is kept only when it *is* the model's argmax, so the output is token for token
  what plain greedy decoding gives, and no accuracy guard is needed.
- **Sampling** (``speculative_sample``): the rejection rule of Leviathan et al. and Chen et al. (2023):
  keep a drafted token x with probability min(1, p(x)/q(x)), else draw from the normalised
  max(0, p - q), so every token is distributed exactly as plain sampling from p would draw it.

Drafters:

- ``lookup``: prompt lookup (as llama.cpp's lookup decoding and transformers'
  ``prompt_lookup_num_tokens``): the tokens that followed the latest earlier occurrence of the
  context's last n-gram. It pays where the output repeats its input (summaries, edits, code, quoting a
  passage) and costs a little where it doesn't. Its proposals are certain (q is a point mass).
- ``draft=MODEL``: a smaller model with the same vocabulary drafts token by token from its own cache,
  cropped to what the target kept.

The draft length adapts: one more after a fully accepted draft, down to what was accepted after a
rejection.

Runs on eager torch models (their ``DynamicCache`` cropped), ONNX Runtime graphs and GenAI builds
(GenAI's generator, or the torch-prefill hybrid's bound buffers, rewound). ONNX Runtime's attention
rounds a one-token call otherwise than a row of a longer call (its one-row kernel), and int8
activations carry that last-bit difference on to other tokens (SmolLM2's GGUF build: after 6-20
tokens). So on a model with ``min_rows`` > 1 every call of the loop runs over at least that many
positions (a step without a draft gets filler positions: the follower table's guesses, or the last
token again; rolled back unless kept), and the output is token for token that of
``reference_greedy``: greedy decoding whose one-token steps compute in the same arithmetic as every
pass over a draft, and as the multi-token windows the perplexity guard measured. Graphs whose rows
share an activation scale (per-tensor dynamic int8) and caches that can't be rolled back (static
caches of compiled models) are refused.

Free rows. A model with ``min_rows`` > 1 computes a step without a draft over filler positions anyway;
given a follower table (``follower_table``: each token's most frequent successor in a corpus), the
filler is that table's guess at the next token, checked at no cost: the greedy output is the same
whatever the filler holds (each row is computed as it would be beside any other), and a right guess
is one more token from the same pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from unbottle.core.errors import ConfigError
from unbottle.data import CALIBRATION_TEXT, packaged_text
from unbottle.runtime.caches import STATIC_CACHE_ATTR, cache_keyword

SPECULATIVE = ("lookup", "draft=MODEL")
MAX_NGRAM = 3
MAX_DRAFT = 8
FIRST_DRAFT = 4
DRAFT_PREFIX = "draft="

# (temperature, generator) when sampling; None when decoding greedily.
Sampling = tuple[float, torch.Generator | None] | None


def parse_speculative(value: str) -> str | None:
    """The draft model's spec of ``draft=MODEL``, None for ``lookup``.

    Raises:
        ConfigError: anything else, naming the allowed forms.
    """
    if value == "lookup":
        return None
    if value.startswith(DRAFT_PREFIX) and value[len(DRAFT_PREFIX) :].strip():
        return value[len(DRAFT_PREFIX) :].strip()
    raise ConfigError(
        f"speculative {value!r} given; allowed: {', '.join(SPECULATIVE)} (e.g. draft=tiny-llama: a smaller "
        "model with the same vocabulary)"
    )


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


def follower_table(ids: Any, vocab_size: int) -> np.ndarray:
    """Each token's most frequent successor in the token sequence ``ids`` (ties: the smaller id), -1
    for a token never followed; int64 of ``vocab_size``. Ids outside the vocabulary are ignored.

    Example:
        >>> follower_table([1, 2, 1, 2, 1, 3], 4).tolist()
        [-1, 2, 1, -1]
    """
    seq = np.asarray(ids, dtype=np.int64).ravel()
    table = np.full(vocab_size, -1, dtype=np.int64)
    if seq.size < 2:
        return table
    a, b = seq[:-1], seq[1:]
    inside = (a >= 0) & (a < vocab_size) & (b >= 0) & (b < vocab_size)
    if not inside.any():
        return table
    pairs, counts = np.unique(a[inside] * vocab_size + b[inside], return_counts=True)
    first, second = pairs // vocab_size, pairs % vocab_size
    order = np.lexsort((second, -counts, first))  # by token, then most frequent, then smaller id
    first, second = first[order], second[order]
    leading = np.r_[True, first[1:] != first[:-1]]
    table[first[leading]] = second[leading]
    return table


@functools.lru_cache(maxsize=4)
def corpus_followers(tokenizer: Any, vocab_size: int) -> np.ndarray | None:
    """``follower_table`` of the packaged calibration novel (*Pride and Prejudice*; never the evaluation
    text) in ``tokenizer``'s tokens; None without a tokenizer (random-token prompts)."""
    if tokenizer is None:
        return None
    return follower_table(tokenizer(packaged_text(CALIBRATION_TEXT))["input_ids"], vocab_size)


def _guesses(table: np.ndarray | None, last: int, count: int) -> list[int]:
    """Up to ``count`` tokens following ``last`` by the follower table, each guess the next's key."""
    out: list[int] = []
    while table is not None and len(out) < count and 0 <= last < table.size and table[last] >= 0:
        last = int(table[last])
        out.append(last)
    return out


def check_speculative(model: Any, speculative: str | None, draft: Any = None) -> None:
    """Refuse an unknown drafter, or a target (or draft model) speculation can't run on exactly, before
    any work: the cache each would use is made once here to learn whether it rolls back.

    Raises:
        ConfigError: as ``parse_speculative`` and ``_cache``; a draft model whose vocabulary size differs.
    """
    if speculative is None:
        return
    parse_speculative(speculative)
    _cache(model, 8)
    if draft is not None:
        _cache(draft, 8, exact=False)
        mine, theirs = model.config.vocab_size, draft.config.vocab_size
        if mine != theirs:
            raise ConfigError(
                f"the draft model has {theirs} tokens in its vocabulary and the model {mine}; a draft model "
                "must share the model's tokenizer (e.g. a smaller sibling, or a student of unbottle distill)"
            )


def _cache(model: Any, length: int, exact: bool = True) -> Any:
    """The cache a speculative decode rolls back: the model's own when it can rewind (GenAI's, the
    hybrid's), else a ``DynamicCache``. ``exact``: the model's tokens must not change (the target's; a
    draft's may).

    Raises:
        ConfigError: rows that share an activation scale (no pass over a draft computes as one-token
            steps), or a cache that can't be rolled back (a compiled model's static cache).
    """
    from transformers import DynamicCache

    if exact and getattr(model, "rows_independent", True) is False:
        raise ConfigError(
            "this graph quantizes activations to int8 per tensor (onnx:quantize=int8-dynamic): every row "
            "of a pass over a draft shares one scale, so speculation would change the greedy tokens; "
            "speculate on a weight-only build (onnx:quantize=int8-block, genai:...) or the float model"
        )
    fixed = ConfigError(
        "speculative decoding runs on eager torch models, ONNX Runtime graphs and GenAI builds decoded in "
        f"one graph; this model ({type(model).__name__}) keeps a cache that can't be rolled back: measure "
        "it without speculative decoding"
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


def _rows(model: Any, ids: Any, cache: Any, rows: int) -> torch.Tensor:
    """The logits ``(T, V)`` of ``ids (1, T)``, the call padded to ``rows`` positions with filler (the
    last token again) whose keys and values are dropped at once."""
    filler = rows - ids.shape[1]
    if filler > 0:
        ids = torch.cat([ids, ids[:, -1:].repeat(1, filler)], dim=1)
    logits = model(input_ids=ids, use_cache=True, **{cache_keyword(model): cache}).logits[0]
    if filler > 0:
        _drop(cache, filler)
        logits = logits[:-filler]
    return logits


def reference_greedy(model: Any, prompt: Any, new_tokens: int) -> list[int]:
    """Plain greedy decoding, one token per step, in the arithmetic speculation verifies with (every
    call over ``min_rows`` positions at least): the tokens ``speculative_greedy`` must give. For a torch
    model, plain greedy decoding's; for an ONNX Runtime graph they may differ from its one-token steps'
    by the last-bit rounding of its attention (see the module's text)."""
    cache = _cache(model, prompt.shape[1] + new_tokens + MAX_DRAFT + 1)
    rows = getattr(model, "min_rows", 1)
    tokens: list[int] = []
    ids = prompt
    with torch.inference_mode():
        for _ in range(new_tokens):
            tokens.append(int(_rows(model, ids, cache, rows)[-1].argmax()))
            ids = torch.tensor([tokens[-1:]], dtype=prompt.dtype, device=prompt.device)
    return tokens


def _drop(cache: Any, positions: int) -> None:
    """Forget the last ``positions`` tokens' keys and values."""
    if positions and callable(getattr(cache, "rewind", None)):
        cache.rewind(positions)
    elif positions:
        cache.crop(-positions)  # transformers 5: crop takes the (negative) number of positions to drop


def _draw(probs: torch.Tensor, sampling: Sampling) -> int:
    """One token from ``probs`` (argmax when greedy)."""
    if sampling is None:
        return int(probs.argmax())
    return int(torch.multinomial(probs, 1, generator=sampling[1]))


def _probs(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Softmax at the sampling temperature (the logits themselves when greedy: only the argmax counts)."""
    if sampling is None:
        return logits
    return torch.softmax(logits.float() / sampling[0], dim=-1)


class LookupDrafter:
    """Prompt lookup: no model and no state; its proposals are certain (``dists`` None)."""

    def propose(self, context: list[int], length: int, sampling: Sampling) -> tuple[list[int], list | None]:
        return lookup_draft(context, length), None

    def keep(self, length: int) -> None:
        """Nothing to roll back."""


class ModelDrafter:
    """A draft model proposing token by token (greedy, or sampled at the same temperature) from its own
    cache, which is cropped to the context the target kept."""

    def __init__(self, model: Any, length: int):
        self.model = model
        self.cache = _cache(model, length, exact=False)
        self.kw = {cache_keyword(model): self.cache}
        self.seen = 0  # context tokens whose keys and values the cache holds
        params = model.parameters() if callable(getattr(model, "parameters", None)) else iter(())
        self.device = next(params, torch.empty(0)).device

    def _next(self, ids: list[int]) -> torch.Tensor:
        ids_ = torch.tensor([ids], device=self.device)
        logits = self.model(input_ids=ids_, use_cache=True, **self.kw).logits[0, -1]
        self.seen += len(ids)
        return logits

    def propose(self, context: list[int], length: int, sampling: Sampling) -> tuple[list[int], list | None]:
        if length < 1:
            return [], None
        logits = self._next(context[self.seen :])
        draft: list[int] = []
        dists: list[torch.Tensor] = []
        for i in range(length):
            probs = _probs(logits, sampling)
            draft.append(_draw(probs, sampling))
            dists.append(probs)
            if i + 1 < length:
                logits = self._next(draft[-1:])
        return draft, (dists if sampling is not None else None)

    def keep(self, length: int) -> None:
        """The first ``length`` context tokens are still the sequence: forget the rest."""
        if self.seen > length:
            _drop(self.cache, self.seen - length)
            self.seen = length


def _greedy_choice(rows: torch.Tensor, draft: list[int], dists: Any, sampling: Sampling) -> tuple[int, int]:
    """(draft tokens kept, the model's next token): the longest prefix equal to the model's argmax."""
    preds = rows.argmax(-1).tolist()
    kept = 0
    while kept < len(draft) and preds[kept] == draft[kept]:
        kept += 1
    return kept, preds[kept]


def _rejection_choice(
    rows: torch.Tensor, draft: list[int], dists: Any, sampling: Sampling
) -> tuple[int, int]:
    """(draft tokens kept, the next token) by the rejection rule that leaves the distribution exactly p;
    a draft without distributions (prompt lookup) proposed each token with certainty."""
    assert sampling is not None
    p = torch.softmax(rows.float() / sampling[0], dim=-1)
    for i, x in enumerate(draft):
        q = dists[i] if dists is not None else torch.zeros_like(p[i]).index_fill_(0, torch.tensor([x]), 1.0)
        if float(torch.rand((), generator=sampling[1])) < min(1.0, float(p[i, x] / q[x])):
            continue
        residual = (p[i] - q).clamp(min=0)
        return i, _draw(residual / residual.sum() if residual.sum() > 0 else p[i], sampling)
    return len(draft), _draw(p[len(draft)], sampling)


def _propose(
    drafter: Any, table: Any, context: list[int], want: int, free: int, sampling: Sampling
) -> tuple[list[int], list | None, int]:
    """(draft, its distributions, tokens the drafter proposed): up to ``want`` tokens, filled up to the
    ``free`` positions a call computes anyway with the follower table's guesses."""
    proposal, dists = drafter.propose(context, want, sampling)
    looked = len(proposal)
    room = min(want, free) - looked
    if dists is None and room > 0:
        proposal = [*proposal, *_guesses(table, proposal[-1] if proposal else context[-1], room)]
    return proposal, dists, looked


Choice = Callable[[torch.Tensor, list[int], Any, Sampling], tuple[int, int]]


def _decode(
    model: Any, prompt: Any, new_tokens: int, timer: Any, draft: Any, sampling: Sampling, table: Any = None
) -> dict[str, Any]:
    """The speculative loop shared by greedy decoding and sampling (see ``speculative_greedy``)."""
    if prompt.shape[0] != 1:
        raise ConfigError(f"speculative decoding decodes one sequence; batch {prompt.shape[0]} given")
    length = prompt.shape[1] + new_tokens + MAX_DRAFT + 1
    cache = _cache(model, length)
    rows_needed = getattr(model, "min_rows", 1)
    drafter = LookupDrafter() if draft is None else ModelDrafter(draft, length)
    choose: Choice = _greedy_choice if sampling is None else _rejection_choice
    context = prompt[0].tolist()
    out: dict[str, Any] = {k: [] for k in ("steps", "made", "proposed", "accepted", "guessed", "guess_kept")}
    draft_len = FIRST_DRAFT
    with torch.inference_mode():
        timer.start()
        logits = _rows(model, prompt, cache, rows_needed)[-1]
        context.append(_draw(_probs(logits, sampling), sampling))
        out["ttft"] = timer.stop()
        made = 1
        while made < new_tokens:
            timer.start()
            want = min(draft_len, new_tokens - made - 1)
            proposal, dists, looked = _propose(drafter, table, context, want, rows_needed - 1, sampling)
            step = torch.tensor([[context[-1], *proposal]], dtype=prompt.dtype, device=prompt.device)
            rows = _rows(model, step, cache, rows_needed)
            kept, nxt = choose(rows, proposal, dists, sampling)
            _drop(cache, len(proposal) - kept)  # every token but the newest keeps its keys and values
            drafter.keep(len(context) + kept)
            context += [*proposal[:kept], nxt]
            out["steps"].append(timer.stop())
            made += kept + 1
            out["made"].append(kept + 1)
            out["proposed"].append(len(proposal))
            out["accepted"].append(kept)
            out["guessed"].append(len(proposal) - looked)
            out["guess_kept"].append(max(0, kept - looked))
            if looked:  # the drafter's own proposals steer its length; guesses don't
                draft_len = min(MAX_DRAFT, draft_len + 1) if kept >= looked else max(1, kept + 1)
    out["tokens"] = context[prompt.shape[1] :]
    return out


def speculative_greedy(
    model: Any, prompt: Any, new_tokens: int, timer: Any, draft: Any = None, table: Any = None
) -> dict[str, Any]:
    """Greedy-decode ``new_tokens`` after ``prompt`` ``(1, T)`` with drafts from prompt lookup, or from
    the ``draft`` model when one is given; ``table`` (``follower_table``): guesses for the positions a
    ``min_rows`` > 1 model computes anyway.

    Returns the tokens (``tokens``), ``ttft`` (prefill + first token), ``steps`` (seconds of each
    verification step, drafting included), ``made`` (tokens each step produced), ``proposed`` and
    ``accepted`` (draft tokens offered and kept per step, the table's guesses included), ``guessed``
    and ``guess_kept`` (the table's share of them).
    """
    return _decode(model, prompt, new_tokens, timer, draft, None, table)


class _NoTimer:
    def start(self) -> None: ...

    def stop(self) -> float:
        return 0.0


def speculative_sample(
    model: Any,
    prompt: Any,
    new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    draft: Any = None,
    table: Any = None,
) -> dict[str, Any]:
    """Sample ``new_tokens`` at ``temperature`` with speculation: each token is distributed as plain
    sampling from the model would draw it (the rejection rule), whatever the drafter proposes.

    Returns what ``speculative_greedy`` does (its timings zero).
    """
    if not temperature > 0:
        raise ConfigError(f"temperature {temperature} given; sampling needs a temperature > 0 (greedy: 0)")
    return _decode(model, prompt, new_tokens, _NoTimer(), draft, (temperature, generator), table)


def speculative_once(
    model: Any, prompt: Any, new_tokens: int, timer: Any, draft: Any = None, table: Any = None
) -> dict[str, list[float]]:
    """One repeat of the decode scenario with speculation, in the decode scenario's metrics
    (``ttft``, ``token_latency`` per token, ``tokens_per_s``, ``request_latency``) plus ``acceptance``
    (draft tokens kept / offered) and ``tokens_per_step``."""
    run = speculative_greedy(model, prompt, new_tokens, timer, draft, table)
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
