"""How closely an encoder (quantised, pruned, ...) keeps its reference's sentence embeddings.

Encoders are deployed for what their hidden states encode: a sentence embedding (mean-pooled last
hidden state, as sentence-transformers pools) or a classifier's input. So an encoder's accuracy is its
agreement with the float model on the same text: the cosine similarity of the two embeddings of each
window of the text, one score per window, for paired statistics.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import torch

from unbottle.core.errors import EvalError
from unbottle.evaluation.base import EvalResult
from unbottle.sources.base import Loaded

CHARS_PER_TOKEN = 8  # generous: the text is cut to this many characters per wanted token before tokenising


def embedding_agreement(
    candidate: Loaded,
    reference: Loaded,
    text: str,
    source: str = "text",
    eval_tokens: int = 4096,
    window: int = 128,
    batch_size: int = 4,
    start_token: int = 0,
) -> EvalResult:
    """Cosine similarity of ``candidate``'s and ``reference``'s mean-pooled embeddings, per window of
    ``window`` tokens over ``eval_tokens`` tokens of ``text`` from ``start_token`` on (random ids,
    seeded, for a model without a tokenizer).

    Raises:
        EvalError: the two vocabularies differ, or the text gives no window.
    """
    sizes = [m.model.config.vocab_size for m in (candidate, reference)]
    if sizes[0] != sizes[1]:
        raise EvalError(
            f"candidate {candidate.info.spec!r} has {sizes[0]} tokens in its vocabulary and reference "
            f"{reference.info.spec!r} {sizes[1]}; compare an encoder with a version of itself"
        )
    limit = min(model_positions(candidate), model_positions(reference))
    w = text_windows(reference, text, source, eval_tokens, min(window, limit), start_token)
    start_time = time.perf_counter()
    scores: list[float] = []
    for batch in w.batches(batch_size):
        mine = _embed(candidate, batch)
        theirs = mine if reference is candidate else _embed(reference, batch)  # ab's A: its own reference
        scores += torch.nn.functional.cosine_similarity(mine, theirs, dim=-1).tolist()
    return EvalResult(
        evaluator="agreement",
        metric="embedding_cosine",
        value=sum(scores) / len(scores),
        higher_is_better=True,
        score_name="window_cosine",
        score_unit="cosine",
        scores=scores,
        sample_ids=w.sample_ids(),
        weights=None,
        seconds=time.perf_counter() - start_time,
        details={
            "source": source,
            "eval_tokens": len(w.ids),
            "window": w.window,
            "pooling": "mean",
            "reference": reference.info.spec,
        },  # fmt: skip
    )


@dataclasses.dataclass(frozen=True)
class Windows:
    """Back-to-back windows of ``window`` tokens of ``ids`` (the text from ``start_token`` on), each
    framed by ``frame`` ([CLS], [SEP] or nothing): the inputs an encoder evaluator scores, one per
    sample."""

    ids: list[int]
    starts: list[int]
    window: int
    start_token: int
    frame: tuple[list[int], list[int]] = ([], [])

    def batches(self, size: int) -> Iterator[torch.Tensor]:
        """The framed windows, ``size`` at a time, as ``(B, len(frame) + window)`` id tensors."""
        head, tail = self.frame
        rows = [head + self.ids[s : s + self.window] + tail for s in self.starts]
        for i in range(0, len(rows), size):
            yield torch.tensor(rows[i : i + size])

    def sample_ids(self) -> list[str]:
        return [f"tokens[{self.start_token + s}:{self.start_token + s + self.window}]" for s in self.starts]


def text_windows(
    loaded: Loaded, text: str, source: str, eval_tokens: int, window: int, start_token: int,
    frame: tuple[list[int], list[int]] = ([], []),
) -> Windows:  # fmt: skip
    """``loaded``'s tokens of ``text`` from ``start_token`` on, cut into windows of ``window`` tokens
    (fewer where the model's positions and ``frame`` leave less room).

    Raises:
        EvalError: the text gives no window.
    """
    window = min(window, model_positions(loaded) - len(frame[0]) - len(frame[1]))
    ids = token_stream(loaded, text, start_token + eval_tokens)[start_token:]
    starts = list(range(0, len(ids) - window + 1, window))
    if not starts:
        raise EvalError(f"{source} gives {len(ids)} tokens, fewer than one window of {window}")
    return Windows(ids, starts, window, start_token, frame)


def model_positions(loaded: Loaded) -> int:
    return int(getattr(loaded.model.config, "max_position_embeddings", None) or 512)


def token_stream(loaded: Loaded, text: str, eval_tokens: int) -> list[int]:
    if loaded.tokenizer is None:
        gen = torch.Generator().manual_seed(0)
        return torch.randint(4, loaded.model.config.vocab_size, (eval_tokens,), generator=gen).tolist()
    ids = loaded.tokenizer(text[: eval_tokens * CHARS_PER_TOKEN], add_special_tokens=False)["input_ids"]
    return list(ids[:eval_tokens])


def _embed(loaded: Loaded, ids: torch.Tensor) -> torch.Tensor:
    """Mean-pooled last hidden state of the encoder stack (a masked-LM's vocabulary head not run)."""
    encoder = getattr(loaded.model, "base_model", loaded.model)
    with torch.inference_mode():
        out: Any = encoder(input_ids=ids, attention_mask=torch.ones_like(ids))
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return hidden.float().mean(dim=1)


def framing(tokenizer: Any) -> tuple[list[int], list[int]]:
    """([CLS], [SEP]) ids around a window, as an encoder saw its training text; empty without them."""
    cls_id = getattr(tokenizer, "cls_token_id", None)
    sep_id = getattr(tokenizer, "sep_token_id", None)
    return ([cls_id] if cls_id is not None else []), ([sep_id] if sep_id is not None else [])
