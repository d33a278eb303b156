"""Agreement of a model with itself is perfect; a perturbed copy drifts; foreign vocabularies are refused."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import transformers

from unbottle.core.errors import EvalError
from unbottle.evaluation import agreement, perplexity
from unbottle.evaluation.agreement import _greedy
from unbottle.evaluation.common import plan_windows
from unbottle.evaluation.corpus import default_text
from unbottle.sources import Loaded
from unbottle.sources.tiny import TINY_MODELS, byte_tokenizer

TEXT = default_text()[0][10_000:13_000]
SETTINGS = dict(eval_tokens=700, window=128, n_prompts=5, prompt_length=16, new_tokens=12, batch_size=3)


@pytest.fixture(scope="module")
def perturbed(tiny_llama: Loaded) -> Loaded:
    """tiny-llama with seeded Gaussian noise (std 0.02) added to every weight."""
    model = copy.deepcopy(tiny_llama.model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return Loaded(model, tiny_llama.tokenizer, dataclasses.replace(tiny_llama.info, spec="tiny-llama+noise"))


def test_agreement_of_a_model_with_itself_is_perfect(tiny_llama: Loaded) -> None:
    kl, top1, greedy = agreement(tiny_llama, tiny_llama, TEXT, **SETTINGS)
    assert [r.metric for r in (kl, top1, greedy)] == [
        "kl_divergence",
        "top1_agreement",
        "greedy_match_length",
    ]
    assert kl.value == pytest.approx(0.0, abs=1e-6) and max(abs(s) for s in kl.scores) <= 1e-6
    assert top1.value == 1.0 and set(top1.scores) == {1.0}
    assert greedy.value == 12.0 and greedy.scores == [12.0] * 5
    assert (kl.higher_is_better, top1.higher_is_better, greedy.higher_is_better) == (False, True, True)
    assert (kl.score_unit, top1.score_unit, greedy.score_unit) == ("nats/token", "fraction", "tokens")


def test_agreement_windows_pair_with_perplexity_windows(tiny_llama: Loaded) -> None:
    kl, top1, greedy = agreement(tiny_llama, tiny_llama, TEXT, **SETTINGS)
    ppl = perplexity(tiny_llama, TEXT, eval_tokens=700, window=128, stride=128)
    assert kl.sample_ids == top1.sample_ids == ppl.sample_ids
    assert kl.weights == top1.weights == ppl.weights and sum(kl.weights) == 699
    assert (
        greedy.sample_ids[0] == "prompt0:tokens[0:16]" and greedy.sample_ids[-1] == "prompt4:tokens[684:700]"
    )


def test_agreement_with_a_perturbed_copy_shows_drift(tiny_llama: Loaded, perturbed: Loaded) -> None:
    kl, top1, greedy = agreement(perturbed, tiny_llama, TEXT, **SETTINGS)
    assert kl.value > 1e-3 and all(s > 0 for s in kl.scores)
    assert 0.0 < top1.value < 1.0
    assert all(0 <= s <= 12 for s in greedy.scores)
    assert kl.details["candidate"] == "tiny-llama+noise" and kl.details["reference"] == "tiny-llama"


def test_agreement_kl_equals_torch_kl_div_on_the_first_window(tiny_llama: Loaded, perturbed: Loaded) -> None:
    kl, top1, _ = agreement(perturbed, tiny_llama, TEXT, **SETTINGS)
    ids = torch.tensor([1] + tiny_llama.tokenizer(TEXT, add_special_tokens=False)["input_ids"][:127])[None]
    with torch.no_grad():
        ref = torch.log_softmax(tiny_llama.model(ids).logits[0, :-1], dim=-1)  # (127, V)
        cand = torch.log_softmax(perturbed.model(ids).logits[0, :-1], dim=-1)
    expected = torch.nn.functional.kl_div(cand, ref, log_target=True, reduction="sum").item() / 127
    assert kl.scores[0] == pytest.approx(expected, rel=1e-4)
    assert top1.scores[0] == pytest.approx((ref.argmax(-1) == cand.argmax(-1)).float().mean().item())
    assert plan_windows(700, 128, 128)[0].n_scored == 127


def test_greedy_with_kv_cache_equals_recomputing_the_whole_sequence(tiny_llama: Loaded) -> None:
    prompts = torch.tensor([[1] + list(range(40, 55)), [1] + list(range(100, 115))])  # (2, 16)
    with torch.no_grad():
        cached = _greedy(tiny_llama.model, prompts, 10)
        seq = prompts
        for _ in range(10):
            nxt = tiny_llama.model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(cached, seq[:, 16:])


def test_agreement_refuses_models_with_different_vocab_sizes(tiny_llama: Loaded) -> None:
    kwargs = dict(TINY_MODELS["tiny-llama"][2], vocab_size=300)
    small = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs)).eval()
    other = Loaded(small, byte_tokenizer(), dataclasses.replace(tiny_llama.info, spec="tiny-llama-300"))
    with pytest.raises(EvalError) as info:
        agreement(other, tiny_llama, TEXT, **SETTINGS)
    message = str(info.value)
    for words in [
        "'tiny-llama-300' (model vocab 300",
        "'tiny-llama' (model vocab 512",
        "model vocabulary sizes",
    ]:
        assert words in message, message


def test_agreement_refuses_models_whose_tokenizers_differ(tiny_llama: Loaded) -> None:
    tokenizer = byte_tokenizer()
    tokenizer.add_tokens(["<extra>"])
    other = Loaded(tiny_llama.model, tokenizer, dataclasses.replace(tiny_llama.info, spec="extra-token"))
    with pytest.raises(EvalError, match=r"tokenizer vocab 261\).*different tokenizer vocabularies"):
        agreement(other, tiny_llama, TEXT, **SETTINGS)


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(n_prompts=0), ["n_prompts=0"]),
        (dict(new_tokens=0), ["new_tokens=0"]),
        (dict(window=4096, prompt_length=4000, new_tokens=200), ["prompt_length + new_tokens is 4200"]),
        (dict(eval_tokens=64), ["raise eval_tokens to at least 128", "window of 128"]),
    ],
)
def test_agreement_rejects_bad_sizes(tiny_llama: Loaded, kwargs: dict, words: list[str]) -> None:
    with pytest.raises(EvalError) as info:
        agreement(tiny_llama, tiny_llama, TEXT, **(SETTINGS | kwargs))
    assert all(w in str(info.value) for w in words), str(info.value)
