"""Multiple-choice accuracy by option log-likelihood, kept per item so two models compare pairwise.

Each option is scored by the log-probability the model gives its tokens after the prompt; the
highest-scoring option is the model's answer. Per-item 0/1 correctness is kept so a change in
accuracy can be tested on the items both models answered (paired), not just as two means.
Each (prompt, option) sequence starts with the model's own prefix (``convention.py``): the tokens
its tokenizer adds to every sequence, or, where it adds none, its BOS (each item is a stream of
its own, as perplexity starts its stream with BOS).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from unbottle.core.errors import EvalError
from unbottle.evaluation.base import EvalResult
from unbottle.evaluation.common import check_positions, check_sizes, device_of, require_causal_lm
from unbottle.evaluation.convention import detect_convention
from unbottle.evaluation.tasks import TASKS, Item, Task, load_task
from unbottle.sources.base import Loaded

__all__ = ["TASKS", "Task", "load_task", "multiple_choice", "option_logprobs"]


def multiple_choice(
    loaded: Loaded,
    task: Task | str | Path,
    max_items: int | None = 200,
    length_normalize: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    part: str | None = None,
) -> EvalResult:
    """Accuracy of a causal LM on a multiple-choice task, with each item's 0/1 correctness kept.

    Args:
        loaded: the model and its tokenizer.
        task: a ``Task``, or a packaged task name / task.json path for ``load_task``.
        max_items: items evaluated; a smaller number than the task has picks the first
            ``max_items`` of a shuffle seeded by ``seed`` (evaluated in file order). None: all.
        length_normalize: divide each option's log-probability by its token count.
        batch_size: (prompt, option) sequences per forward pass.
        seed: seeds the subset choice.
        part: ``"selection"`` or ``"held_out"``: only the first or the second half of the seeded
            shuffle (disjoint halves, so a model chosen on one is checked on items it never saw),
            at most ``max_items`` of it; None: the whole task.
        progress: called as ``progress(options_done, options_total)`` over the (prompt, option)
            sequences, first with 0, then after every batch.

    Returns:
        ``metric="accuracy"``; scores are 1.0/0.0 per item, sample ids the items' indices in the file.

    Raises:
        EvalError: invalid sizes, a model without tokenizer, a task that can't be loaded, or a
            sequence longer than the model's positions.
    """
    start = time.perf_counter()
    check_sizes(max_items=max_items, batch_size=batch_size)
    tokenizer = require_causal_lm(loaded, "multiple-choice")
    if not isinstance(task, Task):
        task = load_task(task)
    chosen = choose_items(len(task.items), max_items, seed, part)
    with torch.inference_mode():
        logprobs = option_logprobs(loaded, task, chosen, length_normalize, batch_size, progress)
    correct = []
    for index, scores in zip(chosen, logprobs, strict=True):
        predicted = max(range(len(scores)), key=scores.__getitem__)  # first of equal maxima
        correct.append(1.0 if predicted in task.items[index].correct else 0.0)
    return EvalResult(
        evaluator="multiple-choice",
        metric="accuracy",
        value=sum(correct) / len(correct),
        higher_is_better=True,
        score_name="item_correct",
        score_unit="0/1",
        scores=correct,
        sample_ids=[str(i) for i in chosen],
        weights=None,
        seconds=time.perf_counter() - start,
        details={**_details(task, chosen, seed, length_normalize, tokenizer, batch_size), "item_part": part},
    )


def _details(
    task: Task, chosen: list[int], seed: int, length_normalize: bool, tokenizer: Any, batch_size: int
) -> dict[str, Any]:
    """Which items were scored and how, with the accuracy a guess would get on them."""
    items = [task.items[i] for i in chosen]
    every = len(chosen) == len(task.items)
    return {
        "task": task.name,
        "task_path": task.path,
        "n_items": len(chosen),
        "n_items_total": len(task.items),
        "subset": "all items" if every else f"first {len(chosen)} after a shuffle",
        "subset_seed": seed,
        "length_normalize": length_normalize,
        "chance_accuracy": sum(len(it.correct) / len(it.options) for it in items) / len(items),
        **detect_convention(tokenizer).details(),
        "batch_size": batch_size,
    }


def choose_items(n_total: int, max_items: int | None, seed: int, part: str | None = None) -> list[int]:
    """All indices, or the first ``max_items`` of a shuffle seeded by ``seed``, in ascending order;
    with ``part``, only from the first (``"selection"``) or second (``"held_out"``) half of it.

    Raises:
        EvalError: an unknown part, or a task with fewer than 2 items to split.
    """
    if part is None:
        if max_items is None or max_items >= n_total:
            return list(range(n_total))
        order = list(range(n_total))
        random.Random(seed).shuffle(order)
        return sorted(order[:max_items])
    if part not in ITEM_PARTS:
        raise EvalError(f"item part {part!r} given; allowed: {', '.join(ITEM_PARTS)}")
    if n_total < 2:
        raise EvalError(
            f"a task of {n_total} item can't be split into selection and held-out items; give 2 or more"
        )
    order = list(range(n_total))
    random.Random(seed).shuffle(order)
    half = order[: n_total // 2] if part == "selection" else order[n_total // 2 :]
    return sorted(half if max_items is None else half[:max_items])


ITEM_PARTS = ("selection", "held_out")


def option_logprobs(
    loaded: Loaded,
    task: Task,
    indices: list[int],
    length_normalize: bool,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[float]]:
    """Log-probability of every option of the chosen items given its prompt, per item in option order.

    Sequences are ``prefix + prompt + option`` token ids (the prefix of ``detect_convention``),
    batched longest-first with right padding and an attention mask; padding never changes the
    scores (it comes after every scored token).
    """
    head = list(detect_convention(loaded.tokenizer).prefix)
    sequences: list[tuple[list[int], int]] = []  # (token ids, tokens of context before the option)
    owners: list[tuple[int, int]] = []  # (position in indices, option index)
    for k, index in enumerate(indices):
        for o, (ids, n_context) in enumerate(encode_item(loaded, task, index, head)):
            sequences.append((ids, n_context))
            owners.append((k, o))
    order = sorted(range(len(sequences)), key=lambda s: -len(sequences[s][0]))
    sums: list[float] = [0.0] * len(sequences)
    if progress is not None:
        progress(0, len(order))
    for b in range(0, len(order), batch_size):
        batch = order[b : b + batch_size]
        for s, value in zip(batch, _score_batch(loaded, [sequences[s] for s in batch]), strict=True):
            n_option = len(sequences[s][0]) - sequences[s][1]
            sums[s] = value / n_option if length_normalize else value
        if progress is not None:
            progress(min(b + batch_size, len(order)), len(order))
    result: list[list[float]] = [[0.0] * len(task.items[i].options) for i in indices]
    for (k, o), value in zip(owners, sums, strict=True):
        result[k][o] = value
    return result


def encode_item(
    loaded: Loaded, task: Task, index: int, head: list[int] | None = None
) -> list[tuple[list[int], int]]:
    """For each option of item ``index``: (``head + prompt + option`` ids, context length).

    ``head`` defaults to the model's prefix (``detect_convention``): its tokenizer's per-sequence
    prefix, else its BOS, else nothing.
    """
    tokenizer = loaded.tokenizer
    item: Item = task.items[index]
    head = list(detect_convention(tokenizer).prefix) if head is None else head
    out = []
    for option in item.options:
        prompt_ids, option_ids = split_encode(tokenizer, task.prompt(item), task.continuation(option))
        context = head + prompt_ids
        if not context:
            raise EvalError(
                f"{task.path}: item {index} has an empty prompt and the tokenizer has no BOS, so its "
                "first option token has nothing to be predicted from; give the task a task_prefix"
            )
        if not option_ids:
            raise EvalError(f"{task.path}: item {index} option {option!r} tokenises to nothing")
        ids = context + option_ids
        what = f"item {index} of {task.name} with option {option!r}"
        check_positions(
            loaded, len(ids), what, "use a task with shorter items or a model with more positions"
        )
        out.append((ids, len(context)))
    return out


def split_encode(tokenizer: Any, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` and of ``continuation`` as it is tokenised after the prompt.

    Trailing whitespace moves from the prompt to the continuation first (``"A: " + "yes"`` is scored
    as ``"A:" + " yes"``), as BPE vocabularies attach spaces to the following word. Then
    ``prompt + continuation`` is tokenised whole; if the prompt's own tokens are not a prefix of that
    (a merge across the boundary), the two parts are tokenised separately and concatenated.
    """
    stripped = prompt.rstrip()
    continuation = prompt[len(stripped) :] + continuation
    prompt_ids = _encode(tokenizer, stripped) if stripped else []
    full = _encode(tokenizer, stripped + continuation)
    if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        return prompt_ids, full[len(prompt_ids) :]
    return prompt_ids, _encode(tokenizer, continuation)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _score_batch(loaded: Loaded, batch: list[tuple[list[int], int]]) -> list[float]:
    """Summed log-probability of each sequence's tokens after its context (float32)."""
    tokenizer, device = loaded.tokenizer, device_of(loaded.model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    T = max(len(ids) for ids, _ in batch)
    x = torch.full((len(batch), T), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(batch), T), dtype=torch.long)  # (B, T)
    scored = torch.zeros((len(batch), T - 1), dtype=torch.bool)  # (B, T-1): target at j + 1 is option
    for r, (ids, n_context) in enumerate(batch):
        x[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
        scored[r, n_context - 1 : len(ids) - 1] = True
    x, mask, scored = x.to(device), mask.to(device), scored.to(device)
    logits = loaded.model(input_ids=x, attention_mask=mask, use_cache=False).logits  # (B, T, V)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    token_logp = logp.gather(-1, x[:, 1:, None]).squeeze(-1)  # (B, T-1)
    return torch.where(scored, token_logp, 0.0).double().sum(dim=1).tolist()
