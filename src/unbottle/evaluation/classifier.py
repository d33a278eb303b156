"""How closely a sequence classifier (quantised, pruned, ...) keeps its reference's labels.

A classifier is deployed for its labels, and an optimised copy is judged by whether it gives the labels
the float model gives, on the same inputs: each window of the text (framed by [CLS]/[SEP] as the
classifier's inputs are) is one input; per window, whether the two top labels agree
(``label_agreement``, 0/1) and the KL divergence of the reference's label distribution from the
candidate's (``label_kl``, nats, sensitive before a label flips). One score per window, paired.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from unbottle.core.errors import EvalError
from unbottle.evaluation.base import EvalResult
from unbottle.evaluation.embedding import framing, model_positions, text_windows
from unbottle.sources.base import Loaded

WINDOW = 32  # tokens per input: a sentence or two, so 4,096 tokens give 128 paired inputs


def label_agreement(
    candidate: Loaded,
    reference: Loaded,
    text: str,
    source: str = "text",
    eval_tokens: int = 4096,
    window: int = WINDOW,
    batch_size: int = 8,
    start_token: int = 0,
) -> list[EvalResult]:
    """``[label_agreement, label_kl]`` of ``candidate`` against ``reference`` over windows of
    ``window`` tokens of ``eval_tokens`` tokens of ``text`` from ``start_token`` on.

    Raises:
        EvalError: either model lacks its classifier head, the label counts differ, or the text gives
            no window.
    """
    _check(candidate, reference)
    frame = framing(reference.tokenizer)
    limit = min(model_positions(candidate), model_positions(reference)) - len(frame[0]) - len(frame[1])
    w = text_windows(reference, text, source, eval_tokens, min(window, limit), start_token, frame)
    began = time.perf_counter()
    agree: list[float] = []
    kl: list[float] = []
    for batch in w.batches(batch_size):
        mine = _log_probs(candidate, batch)
        theirs = mine if candidate is reference else _log_probs(reference, batch)
        agree += (mine.argmax(-1) == theirs.argmax(-1)).double().tolist()
        kl += (theirs.exp() * (theirs - mine)).sum(-1).clamp(min=0).tolist()
    seconds = time.perf_counter() - began
    ids_ = w.sample_ids()
    details = {"source": source, "eval_tokens": len(w.ids), "window": w.window}
    details["reference"] = reference.info.spec
    return [
        EvalResult("agreement", "label_agreement", sum(agree) / len(agree), True, "window_same_label", "0/1",
                   agree, ids_, None, seconds, details),
        EvalResult("agreement", "label_kl", sum(kl) / len(kl), False, "window_label_kl", "nats",
                   kl, ids_, None, seconds, details),
    ]  # fmt: skip


def _check(candidate: Loaded, reference: Loaded) -> None:
    for loaded in (candidate, reference):
        if loaded.info.task != "sequence-classification" or not loaded.info.head:
            raise EvalError(
                f"{loaded.info.spec!r} has no trained classifier head (a {loaded.info.task} model"
                f"{'' if loaded.info.head else ', its head random'}); label agreement compares two "
                "classifiers: compare their embeddings instead"
            )
    labels = [m.model.config.num_labels for m in (candidate, reference)]
    if labels[0] != labels[1]:
        raise EvalError(
            f"candidate {candidate.info.spec!r} has {labels[0]} labels and reference {reference.info.spec!r} "
            f"{labels[1]}; compare a classifier with a version of itself"
        )


def _log_probs(loaded: Loaded, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        logits: Any = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return torch.log_softmax(logits.double(), dim=-1)
