"""Prompt-lookup speculative decoding: greedy output token for token as plain greedy decoding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.errors import ConfigError
from unbottle.runtime.speculative import (
    check_speculative,
    corpus_followers,
    follower_table,
    lookup_draft,
    speculative_greedy,
    speculative_once,
)


def test_lookup_drafts_what_followed_the_latest_earlier_ngram():
    assert lookup_draft([5, 6, 7, 9, 5, 6], 2) == [7, 9]
    assert lookup_draft([1, 2, 3, 1, 2, 4, 1, 2], 3) == [4, 1, 2]  # the latest occurrence wins
    assert lookup_draft([1, 2, 3, 4], 3) == []  # nothing recurs
    assert lookup_draft([3, 3], 5) == [3]
    assert lookup_draft([1, 2, 1], 0) == []


def test_the_follower_table_keeps_each_tokens_most_frequent_successor():
    table = follower_table([4, 1, 4, 2, 4, 2, 7, 7, 9, 3, 3], 8)
    assert table.tolist() == [-1, 4, 4, 3, 2, -1, -1, 7]  # 9 is outside the vocabulary: ignored
    assert follower_table([5, 1, 5, 0], 6)[5] == 0  # a tie goes to the smaller id
    assert (follower_table([], 4) == -1).all() and (follower_table([2], 4) == -1).all()


def test_the_corpus_table_comes_from_the_calibration_novel_in_the_models_tokens(tiny_llama):
    table = corpus_followers(tiny_llama.tokenizer, tiny_llama.model.config.vocab_size)
    if tiny_llama.tokenizer is None:
        assert table is None
    else:
        assert table.shape == (tiny_llama.model.config.vocab_size,) and (table >= 0).sum() > 10
    assert corpus_followers(None, 16) is None


def test_a_one_row_model_spends_nothing_on_guesses(tiny_llama):
    """Guesses only fill positions a call computes anyway; a torch model's calls can be one row."""
    prompt = _prompts(tiny_llama.model.config.vocab_size, 2)[1]
    table = torch.arange(1, tiny_llama.model.config.vocab_size + 1).numpy() % 500
    run = speculative_greedy(tiny_llama.model, prompt, 20, CpuTimer(), table=table)
    assert sum(run["guessed"]) == 0


def test_guesses_in_the_free_rows_of_a_two_row_model_keep_its_tokens(tiny_llama, monkeypatch):
    """A model that computes two rows per call (as ONNX Runtime graphs declare): the table's guesses
    ride in the second row, the tokens stay those of the two-row reference, and right guesses are
    tokens gained."""
    from speculation_checks import assert_lookup_exact

    monkeypatch.setattr(tiny_llama.model, "min_rows", 2, raising=False)
    assert assert_lookup_exact(tiny_llama.model, prompts=20, new_tokens=16, seed=3) > 0


def _prompts(vocab: int, n: int) -> list[torch.Tensor]:
    """Half repetitive (a phrase said three times: lookup-friendly), half random (lookup-hostile)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        if i % 2:
            out.append(torch.randint(4, vocab, (1, 24), generator=g))
        else:
            phrase = torch.randint(4, vocab, (1, 8), generator=g)
            out.append(phrase.repeat(1, 3))
    return out


def test_greedy_output_is_identical_to_plain_decoding_on_50_prompts(tiny_llama):
    torch.manual_seed(0)
    model = tiny_llama.model
    accepted = proposed = 0
    for prompt in _prompts(model.config.vocab_size, 50):
        record: list = []
        decode_once(model, prompt, 20, CpuTimer(), record=record)
        plain = [int(t) for t in torch.cat(record, dim=1)[0]]
        run = speculative_greedy(model, prompt, 20, CpuTimer())
        assert run["tokens"] == plain
        accepted, proposed = accepted + sum(run["accepted"]), proposed + sum(run["proposed"])
    assert 0 < accepted <= proposed  # drafts were offered, and kept where the model agreed


def _draft_model(layers: int = 1, seed: int = 1):
    """A smaller Llama with tiny-llama's vocabulary (its own random weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_greedy_output_with_a_draft_model_is_identical_on_50_prompts(tiny_llama):
    model, draft = tiny_llama.model, _draft_model()
    for prompt in _prompts(model.config.vocab_size, 50):
        record: list = []
        decode_once(model, prompt, 20, CpuTimer(), record=record)
        plain = [int(t) for t in torch.cat(record, dim=1)[0]]
        assert speculative_greedy(model, prompt, 20, CpuTimer(), draft=draft)["tokens"] == plain


def test_the_model_as_its_own_draft_model_has_every_draft_kept(tiny_llama):
    """The draft model's cache follows the kept context: drafting with the model itself agrees always."""
    prompt = _prompts(tiny_llama.model.config.vocab_size, 2)[1]
    run = speculative_greedy(tiny_llama.model, prompt, 30, CpuTimer(), draft=tiny_llama.model)
    assert run["accepted"] == run["proposed"] and sum(run["proposed"]) > 20
    assert max(run["made"]) > 4  # the draft grew after full acceptance


def test_the_decode_metrics_count_every_token_once(tiny_llama):
    prompt = _prompts(tiny_llama.model.config.vocab_size, 1)[0]
    samples = speculative_once(tiny_llama.model, prompt, 16, CpuTimer())
    run = speculative_greedy(tiny_llama.model, prompt, 16, CpuTimer())
    assert sum(run["made"]) == 15 and len(run["tokens"]) == 16
    assert samples["tokens_per_s"][0] > 0 and 0.0 <= samples["acceptance"][0] <= 1.0
    assert samples["tokens_per_step"][0] >= 1.0
    assert len(samples["token_latency"]) == 15  # one per token after the first, as plain decoding


def test_unknown_drafters_and_models_with_their_own_cache_are_refused(tiny_llama):
    with pytest.raises(ConfigError, match="speculative 'eagle' given; allowed: lookup, draft=MODEL"):
        check_speculative(tiny_llama.model, "eagle")
    with pytest.raises(ConfigError, match="allowed: lookup, draft=MODEL"):
        check_speculative(tiny_llama.model, "draft=")
    other_vocab = _draft_model()
    other_vocab.config.vocab_size = 300
    with pytest.raises(ConfigError, match="draft model has 300 tokens in its vocabulary and the model 512"):
        check_speculative(tiny_llama.model, "draft=x", other_vocab)

    class OwnCache:
        def new_cache(self, *args):
            return None

    with pytest.raises(ConfigError, match="keeps a cache that can.t be rolled back"):
        check_speculative(OwnCache(), "lookup")
    check_speculative(tiny_llama.model, None)
    check_speculative(tiny_llama.model, "lookup")


def test_bench_with_speculative_lookup_records_acceptance_beside_the_decode_metrics(tiny_llama):
    from unbottle.benchmarking import benchmark
    from unbottle.benchmarking.config import BenchConfig

    config = BenchConfig(
        scenarios=("decode",), batch_sizes=(1,), new_tokens=8, min_repeats=2, min_time_s=0, threads=1,
        speculative="lookup",
    )  # fmt: skip
    names = {m.name: m for m in benchmark(tiny_llama, config).measurements}
    assert {"decode.tokens_per_s", "decode.acceptance", "decode.tokens_per_step"} <= set(names)
    assert len(names["decode.token_latency"].samples) == 2 * 7
    assert names["decode.tokens_per_s"].params["speculative"] == "lookup"
    with pytest.raises(ConfigError, match="decodes one sequence: give batch_sizes 1"):
        BenchConfig(batch_sizes=(1, 4), speculative="lookup")
    drafted = benchmark(tiny_llama, dataclasses.replace(config, speculative="draft=tiny-llama"))
    names = {m.name: m for m in drafted.measurements}
    assert names["decode.acceptance"].samples == [1.0, 1.0]  # the model drafting for itself
    assert names["decode.tokens_per_s"].params["speculative"] == "draft=tiny-llama"
