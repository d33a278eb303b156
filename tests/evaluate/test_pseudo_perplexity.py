"""Masked-LM pseudo-perplexity: every token scored once with itself masked, checked against the
one-token-per-pass definition; a spoiled head scores worse; a checkpoint without its head is refused."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from unbottle.core.errors import EvalError
from unbottle.evaluation.pseudo_perplexity import pseudo_perplexity
from unbottle.models import load
from unbottle.sources import Loaded
from unbottle.sources.hf_folder import HFFolderSource

TEXT = "It was a bright cold day in April, and the clocks were striking thirteen. " * 40


@pytest.fixture(scope="module")
def tiny_bert():
    return load("tiny-bert")


def _one_at_a_time(loaded: Loaded, ids: list[int], mask: int) -> float:
    """The textbook pseudo-log-likelihood: one forward per token, that token masked; mean NLL."""
    total = 0.0
    with torch.no_grad():
        for i, token in enumerate(ids):
            masked = torch.tensor([ids[:i] + [mask] + ids[i + 1 :]])
            logits = loaded.model(input_ids=masked, attention_mask=torch.ones_like(masked)).logits[0, i]
            total -= float(torch.log_softmax(logits.double(), -1)[token])
    return total / len(ids)


def test_masking_every_nth_position_scores_each_token_once_as_the_definition(tiny_bert):
    window = 24
    result = pseudo_perplexity(tiny_bert, TEXT, eval_tokens=48, window=window, spread=window)
    assert result.metric == "pseudo_perplexity" and len(result.scores) == 2 and result.weights == [24.0, 24.0]
    ids = tiny_bert.tokenizer(TEXT, add_special_tokens=False)["input_ids"][:48]
    mask = result.details["mask_token_id"]
    expected = [_one_at_a_time(tiny_bert, ids[s : s + window], mask) for s in (0, window)]
    assert result.scores == pytest.approx(expected, rel=1e-5)
    assert result.value == pytest.approx(math.exp(sum(expected) / 2), rel=1e-5)
    spread = pseudo_perplexity(tiny_bert, TEXT, eval_tokens=48, window=window, spread=8)
    assert spread.sample_ids == result.sample_ids and spread.scores != result.scores  # more masked at once


def test_a_head_pushed_toward_one_token_scores_worse(tiny_bert):
    spoiled = copy.deepcopy(tiny_bert.model)
    with torch.no_grad():
        spoiled.cls.predictions.bias[7] += 30.0  # every masked position now bets on token 7
    spoiled_loaded = Loaded(spoiled, tiny_bert.tokenizer, tiny_bert.info)
    worse = pseudo_perplexity(spoiled_loaded, TEXT, eval_tokens=256, window=64)
    base = pseudo_perplexity(tiny_bert, TEXT, eval_tokens=256, window=64)
    assert worse.value > 10 * base.value
    assert all(w > b for w, b in zip(worse.scores, base.scores, strict=True))


def test_a_checkpoint_saved_without_its_head_is_known_and_refused(tiny_bert, tmp_path: Path):
    tiny_bert.model.save_pretrained(tmp_path / "full")
    tiny_bert.model.bert.save_pretrained(tmp_path / "encoder")  # a sentence encoder's checkpoint
    assert HFFolderSource(tmp_path / "full").probe_head()
    headless = HFFolderSource(tmp_path / "encoder").load()
    assert not headless.info.head and any("no masked-lm head" in n for n in headless.info.notes)
    with pytest.raises(EvalError, match="saved without its masked-LM head"):
        pseudo_perplexity(headless, TEXT)
    with pytest.raises(EvalError, match="spread 0 given"):
        pseudo_perplexity(tiny_bert, TEXT, spread=0)
    flagged = Loaded(tiny_bert.model, tiny_bert.tokenizer, dataclasses.replace(tiny_bert.info, head=False))
    with pytest.raises(EvalError, match="random"):
        pseudo_perplexity(flagged, TEXT)


def test_a_model_saved_from_a_headless_checkpoint_stays_headless(tiny_bert, tmp_path: Path):
    """The saved weights hold the random head too: the recipe remembers that it is random."""
    from unbottle.models import resolve
    from unbottle.passes import parse_pass
    from unbottle.passes.recipe import apply_and_save

    tiny_bert.model.bert.save_pretrained(tmp_path / "encoder")
    headless = HFFolderSource(tmp_path / "encoder").load()
    source = str(tmp_path / "encoder")
    for passes, baked in (["prune"], 1), (["precision"], 0):  # weights saved with the random head, or not
        out = tmp_path / f"out-{baked}"
        recipe, _ = apply_and_save(headless, [parse_pass(p) for p in passes], source, out)
        assert recipe.head is False and recipe.baked == baked
        assert not resolve(str(out)).probe_head()
        assert not resolve(str(out)).load().info.head
