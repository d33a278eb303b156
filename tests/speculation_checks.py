"""Exact prompt-lookup speculation checked prompt by prompt against ``reference_greedy``.

Half the prompts repeat a phrase (lookup finds drafts), half are random (it mostly doesn't). Each is
decoded twice: with lookup alone, and with a follower table whose guesses fill the positions a
``min_rows`` > 1 model computes anyway (a table of the reference itself, partly spoiled: many guesses
right, some wrong). Tests import it by name (pytest puts tests/ on the path).
"""

from __future__ import annotations

from typing import Any

import torch

from unbottle.benchmarking.timing import CpuTimer
from unbottle.runtime.speculative import (
    check_speculative,
    follower_table,
    reference_greedy,
    speculative_greedy,
)


def reference_table(prompt: Any, reference: list[int], vocab_size: int) -> Any:
    """The follower table of the prompt and its reference continuation, every third token's entry made
    wrong: guesses that are often right, and sometimes not."""
    table = follower_table(prompt[0].tolist() + reference, vocab_size)
    wrong = table[::3] >= 0
    table[::3][wrong] = (table[::3][wrong] + 1) % vocab_size
    return table


def assert_lookup_exact(model: Any, prompts: int, new_tokens: int, seed: int) -> int:
    """Assert speculative greedy decoding, without and with a follower table, gives the reference's
    tokens on every prompt; return the draft tokens kept over all of them (a caller checks the rollback
    ran). On a ``min_rows`` > 1 model, asserts the table's guesses were offered and some kept."""
    check_speculative(model, "lookup")
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    accepted = guessed = guess_kept = 0
    for i in range(prompts):
        phrase = torch.randint(4, vocab, (1, 6), generator=g)
        prompt = phrase.repeat(1, 3) if i % 2 == 0 else torch.randint(4, 500, (1, 16), generator=g)
        reference = reference_greedy(model, prompt, new_tokens)
        run = speculative_greedy(model, prompt, new_tokens, CpuTimer())
        assert run["tokens"] == reference, i
        table = reference_table(prompt, reference, vocab)
        tabled = speculative_greedy(model, prompt, new_tokens, CpuTimer(), table=table)
        assert tabled["tokens"] == reference, i
        accepted += sum(run["accepted"]) + sum(tabled["accepted"])
        guessed, guess_kept = guessed + sum(tabled["guessed"]), guess_kept + sum(tabled["guess_kept"])
    if getattr(model, "min_rows", 1) > 1:
        assert guessed > guess_kept > 0  # guesses filled free rows, some right, some wrong
    else:
        assert guessed == 0  # no free rows: a one-row model never pays for a guess
    return accepted
