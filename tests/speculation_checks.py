"""Exact prompt-lookup speculation checked prompt by prompt against ``reference_greedy``.

Half the prompts repeat a phrase (lookup finds drafts), half are random (it mostly doesn't). Tests import
it by name (pytest puts tests/ on the path).
"""

from __future__ import annotations

from typing import Any

import torch

from unbottle.benchmarking.timing import CpuTimer
from unbottle.runtime.speculative import check_speculative, reference_greedy, speculative_greedy


def assert_lookup_exact(model: Any, prompts: int, new_tokens: int, seed: int) -> int:
    """Assert speculative greedy decoding gives the reference's tokens on every prompt; return the
    draft tokens kept over all of them (a caller checks the rollback ran)."""
    check_speculative(model, "lookup")
    g = torch.Generator().manual_seed(seed)
    accepted = 0
    for i in range(prompts):
        phrase = torch.randint(4, model.config.vocab_size, (1, 6), generator=g)
        prompt = phrase.repeat(1, 3) if i % 2 == 0 else torch.randint(4, 500, (1, 16), generator=g)
        run = speculative_greedy(model, prompt, new_tokens, CpuTimer())
        assert run["tokens"] == reference_greedy(model, prompt, new_tokens), i
        accepted += sum(run["accepted"])
    return accepted
