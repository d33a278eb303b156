"""Encoders are evaluated by their embeddings' agreement with a reference: cosine per window, paired."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from unbottle.core.errors import ConfigError, EvalError
from unbottle.evaluation import EvalConfig, evaluate
from unbottle.evaluation.embedding import embedding_agreement
from unbottle.models import load
from unbottle.sources import Loaded

TEXT = "It was a bright cold day in April, and the clocks were striking thirteen. " * 40


@pytest.fixture(scope="module")
def tiny_bert():
    return load("tiny-bert")


def _perturbed(loaded: Loaded, scale: float) -> Loaded:
    model = copy.deepcopy(loaded.model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.base_model.encoder.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return Loaded(model, loaded.tokenizer, loaded.info)


def test_a_model_agrees_with_itself_and_a_perturbed_copy_less(tiny_bert):
    same = embedding_agreement(tiny_bert, tiny_bert, TEXT, eval_tokens=512, window=64)
    assert same.metric == "embedding_cosine" and len(same.scores) == 8
    assert same.scores == pytest.approx([1.0] * 8)
    small = embedding_agreement(_perturbed(tiny_bert, 0.01), tiny_bert, TEXT, eval_tokens=512, window=64)
    large = embedding_agreement(_perturbed(tiny_bert, 0.2), tiny_bert, TEXT, eval_tokens=512, window=64)
    assert small.sample_ids == same.sample_ids
    assert 1.0 > small.value > large.value > -1.0


def test_an_encoder_without_its_head_is_evaluated_against_a_reference_it_must_be_given(tiny_bert):
    headless = Loaded(tiny_bert.model, tiny_bert.tokenizer, dataclasses.replace(tiny_bert.info, head=False))
    with pytest.raises(EvalError, match="saved without its masked-LM head.*give reference MODEL"):
        evaluate(headless, EvalConfig(eval_tokens=512))
    results = evaluate(headless, EvalConfig(eval_tokens=512), tiny_bert)
    assert [r.metric for r in results] == ["embedding_cosine"]
    assert [r.metric for r in evaluate(tiny_bert, EvalConfig(eval_tokens=512))] == ["pseudo_perplexity"]
    both = evaluate(tiny_bert, EvalConfig(eval_tokens=512), tiny_bert)
    assert [r.metric for r in both] == ["pseudo_perplexity", "embedding_cosine"]
    other = load("tiny-llama")  # a fresh copy: its vocabulary size changed here only
    other.model.config.vocab_size = 300
    with pytest.raises(EvalError, match="512 tokens in its vocabulary and reference 'tiny-llama' 300"):
        embedding_agreement(tiny_bert, other, TEXT)


def test_ab_with_eval_compares_an_encoders_embeddings_paired_by_window():
    import unbottle

    doc = unbottle.ab(
        "tiny-bert", "tiny-bert", scenario="encode", rounds=3, prompt_length=16, batch_size=2, threads=1,
        eval=EvalConfig(eval_tokens=512),
    )  # fmt: skip
    metrics = doc["comparison"]["metrics"]
    assert {"encode.latency", "encode.sequences_per_s"} <= set(metrics)
    cosine = metrics["embedding_cosine"]
    assert cosine["a"]["point"] == pytest.approx(1.0) and cosine["b"]["point"] == pytest.approx(1.0)
    pseudo = metrics["pseudo_perplexity"]  # tiny-bert has its head: paired by window too, the same model
    assert pseudo["unit"] == "ppl" and pseudo["a"]["point"] == pytest.approx(pseudo["b"]["point"])
    with pytest.raises(ConfigError, match="the encode scenario runs encoders"):
        unbottle.ab("tiny-llama", "tiny-llama", scenario="encode", rounds=3, threads=1)
