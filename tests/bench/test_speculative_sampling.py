"""Speculative sampling keeps the model's distribution: a goodness-of-fit test against the exact joint
distribution of four sampled tokens, on tiny models built here, with a drafter that disagrees."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare
from transformers import LlamaConfig, LlamaForCausalLM

from unbottle.core.errors import ConfigError
from unbottle.runtime import speculative
from unbottle.runtime.speculative import follower_table, speculative_sample

VOCAB, NEW, TEMPERATURE = 6, 4, 0.8


def _tiny(seed: int) -> LlamaForCausalLM:
    """A one-layer Llama over 6 tokens whose next-token distributions are far from uniform."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(12)
    return model


def _exact(model: LlamaForCausalLM, prompt: list[int]) -> torch.Tensor:
    """P(every NEW-token continuation), indexed by the continuation read as a base-VOCAB number."""
    seqs: list[list[int]] = [[]]
    joint = torch.ones(1, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(NEW):
            logits = model(input_ids=torch.tensor([prompt + s for s in seqs])).logits[:, -1]
            step = torch.softmax(logits.double() / TEMPERATURE, dim=-1)
            joint = (joint[:, None] * step).reshape(-1)
            seqs = [s + [v] for s in seqs for v in range(VOCAB)]
    return joint


def _fit(model, prompt: list[int], draft, n: int, seed: int, drafts: list | None = None, table=None) -> float:
    """The chi-square p-value of n speculative samples against the exact distribution (cells expected
    under 5 pooled); ``drafts`` collects [drafted tokens kept, drafted tokens offered, guesses kept,
    guesses offered]."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(VOCAB**NEW, dtype=torch.float64)
    kept = offered = guess_kept = guessed = 0
    for _ in range(n):
        run = speculative_sample(model, torch.tensor([prompt]), NEW, TEMPERATURE, g, draft, table)
        counts[sum(t * VOCAB**i for i, t in enumerate(reversed(run["tokens"])))] += 1
        kept, offered = kept + sum(run["accepted"]), offered + sum(run["proposed"])
        guess_kept, guessed = guess_kept + sum(run["guess_kept"]), guessed + sum(run["guessed"])
    if drafts is not None:
        drafts += [kept, offered, guess_kept, guessed]
    expected = _exact(model, prompt) * n
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    return float(chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


@pytest.fixture(scope="module")
def pair():
    return _tiny(0), _tiny(1)


def test_sampling_with_a_draft_model_keeps_the_model_distribution(pair):
    target, draft = pair
    drafts: list[int] = []
    assert _fit(target, [2, 3, 4, 5], draft, 1500, seed=0, drafts=drafts) > 1e-3
    assert 0.1 < drafts[0] / drafts[1] < 0.9  # both kept and rejected drafts were sampled


def test_sampling_with_prompt_lookup_keeps_the_model_distribution(pair):
    target, _ = pair
    drafts: list[int] = []
    assert _fit(target, [2, 3, 4, 2, 3, 4, 2, 3], None, 1500, seed=1, drafts=drafts) > 1e-3
    assert 0.05 < drafts[0] / drafts[1] < 0.95


def test_sampling_with_guesses_in_free_rows_keeps_the_model_distribution(pair, monkeypatch):
    """A two-row model (as ONNX Runtime graphs declare) with a follower table: its guesses are drafts
    like any other, kept or rejected by the same rule."""
    target, _ = pair
    monkeypatch.setattr(target, "min_rows", 2, raising=False)
    table = follower_table([0, 1, 2, 3, 4, 5, 0], VOCAB)  # t -> t + 1 (mod 6)
    drafts: list[int] = []
    assert _fit(target, [2, 3, 4, 5], None, 1500, seed=4, drafts=drafts, table=table) > 1e-3
    assert 0 < drafts[2] < drafts[3]  # guesses were offered, some kept, some rejected


def test_the_fit_test_catches_a_rule_that_keeps_every_draft(pair, monkeypatch):
    """The negative control: accepting every drafted token gives the draft model's distribution."""
    target, draft = pair

    def keep_all(rows, proposal, dists, sampling):
        p = torch.softmax(rows.float() / sampling[0], dim=-1)
        return len(proposal), int(torch.multinomial(p[len(proposal)], 1, generator=sampling[1]))

    monkeypatch.setattr(speculative, "_rejection_choice", keep_all)
    assert _fit(target, [2, 3, 4, 5], draft, 600, seed=2) < 1e-6
    assert _fit(target, [2, 3, 4, 2, 3, 4, 2, 3], None, 600, seed=3) < 1e-6


def test_sampling_needs_a_positive_temperature(pair):
    with pytest.raises(ConfigError, match="temperature 0 given"):
        speculative_sample(pair[0], torch.tensor([[2, 3]]), 4, temperature=0)
