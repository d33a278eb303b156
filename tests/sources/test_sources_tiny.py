"""Tiny models are seeded, shaped as documented, and read any UTF-8 text with their byte tokenizer."""

from __future__ import annotations

import pytest
import torch

from unbottle.models import load
from unbottle.sources import Loaded
from unbottle.sources.tiny import SPECIALS, TinySource, byte_tokenizer

# tiny-llama: embed + lm_head (untied) + 2 x (q, k, v, o, gate, up, down, 2 norms) + final norm.
_LAYER = 64 * 64 + 2 * (32 * 64) + 64 * 64 + 3 * (128 * 64) + 2 * 64
TINY_LLAMA_PARAMS = 2 * 512 * 64 + 2 * _LAYER + 64


def test_load_tiny_llama_gives_bit_identical_weights_on_every_load(tiny_llama: Loaded) -> None:
    again = load("tiny-llama").model.state_dict()
    first = tiny_llama.model.state_dict()
    assert list(again) == list(first)
    differing = [k for k in first if not torch.equal(first[k], again[k])]
    assert differing == [], f"tensors differ between two loads of tiny-llama: {differing}"


def test_load_tiny_llama_has_two_layers_hidden_64_vocab_512(tiny_llama: Loaded, logits_of) -> None:
    config = tiny_llama.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (2, 64, 512)
    info = tiny_llama.info
    assert (info.task, info.architecture, info.source_kind, info.dtype) == (
        "causal-lm",
        "llama",
        "tiny",
        "float32",
    )
    assert info.n_parameters == TINY_LLAMA_PARAMS == 139_584
    assert info.path is None and info.notes == ["random weights, seed 0"]
    assert not tiny_llama.model.training
    assert tuple(logits_of(tiny_llama.model).shape) == (1, 8, 512)


def test_load_tiny_bert_is_masked_lm_with_vocab_512(logits_of) -> None:
    bert = load("tiny-bert")
    assert (bert.info.task, bert.info.architecture) == ("masked-lm", "bert")
    assert (bert.model.config.num_hidden_layers, bert.model.config.hidden_size) == (2, 64)
    assert tuple(logits_of(bert.model).shape) == (1, 8, 512)


def test_tiny_source_seed_changes_weights_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    seed0 = TinySource("tiny-llama", seed=0).load().model.state_dict()
    assert torch.equal(torch.rand(3), expected_draw), "loading a tiny model consumed the global RNG"
    seed1 = TinySource("tiny-llama", seed=1).load().model.state_dict()
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(seed0[key], seed1[key]), "seed 1 gave the same weights as seed 0"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_load_tiny_llama_casts_to_requested_dtype(dtype: str) -> None:
    loaded = load("tiny-llama", dtype=dtype)
    assert loaded.info.dtype == dtype
    assert {str(p.dtype) for p in loaded.model.parameters()} == {f"torch.{dtype}"}


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        "héllo wörld ünïcödé",
        "日本語のテキスト",
        "emoji 🙂🚀 and\ttabs\nnewlines",
        "  leading spaces",
    ],
)
def test_byte_tokenizer_round_trips_utf8_text_one_token_per_byte(text: str) -> None:
    tok = byte_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert min(ids) >= len(SPECIALS) and max(ids) < len(SPECIALS) + 256
    assert tok.decode(ids) == text


def test_byte_tokenizer_has_260_tokens_and_named_specials(tiny_llama: Loaded) -> None:
    tok = tiny_llama.tokenizer
    assert len(tok) == 260
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIALS)


# tiny model → (model_type, layer kinds its cache is built from)
FAMILIES = {
    "tiny-mistral": ("mistral", ["DynamicSlidingWindowLayer"] * 2),
    "tiny-qwen2": ("qwen2", ["DynamicLayer"] * 2),
    "tiny-qwen3": ("qwen3", ["DynamicLayer"] * 2),
    "tiny-gemma2": ("gemma2", ["DynamicSlidingWindowLayer", "DynamicLayer"]),
    "tiny-gemma3": ("gemma3_text", ["DynamicSlidingWindowLayer"] * 2 + ["DynamicLayer"]),
    "tiny-phi3": ("phi3", ["DynamicLayer"] * 2),
    "tiny-gpt2": ("gpt2", ["DynamicLayer"] * 2),
    "tiny-gpt-neox": ("gpt_neox", ["DynamicLayer"] * 2),
    "tiny-opt": ("opt", ["DynamicLayer"] * 2),
}


@pytest.mark.parametrize("spec", sorted(FAMILIES))
def test_load_tiny_family_is_a_seeded_causal_lm_with_its_own_cache_layout(spec: str, logits_of) -> None:
    from transformers import DynamicCache

    first, again = load(spec), TinySource(spec).load()
    model_type, layer_kinds = FAMILIES[spec]
    assert (first.info.task, first.info.architecture, first.info.source_kind) == (
        "causal-lm",
        model_type,
        "tiny",
    )
    config = first.model.config
    assert (config.vocab_size, config.hidden_size) == (512, 64)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 3)
    assert [type(layer).__name__ for layer in DynamicCache(config=config).layers] == layer_kinds
    ref, got = logits_of(first.model), logits_of(again.model)
    assert tuple(ref.shape) == (1, 8, 512) and bool(ref.isfinite().all())
    assert torch.equal(ref, got), f"two loads of {spec} give different logits"


@pytest.mark.parametrize("spec", ["tiny-mistral", "tiny-gemma2", "tiny-gemma3"])
def test_sliding_window_of_8_changes_logits_only_past_the_window(spec: str) -> None:
    import copy

    model = load(spec).model
    assert model.config.sliding_window == 8
    wide = copy.deepcopy(model)
    wide.config.sliding_window = 4096
    ids = torch.randint(4, 260, (1, 24), generator=torch.Generator().manual_seed(0))  # (B, T)
    with torch.no_grad():
        windowed, full = model(input_ids=ids).logits, wide(input_ids=ids).logits  # (1, 24, 512)
    inside = float((windowed[:, :8] - full[:, :8]).abs().max())
    past = float((windowed[:, 8:] - full[:, 8:]).abs().amax(dim=-1).min())
    assert inside < 1e-6, f"{spec}: logits within the window differ by {inside:.2e}"
    assert past > 1e-4, f"{spec}: the window changes no position past it (smallest change {past:.2e})"


def test_tiny_gemma2_softcap_bends_its_logits() -> None:
    import copy

    model = load("tiny-gemma2").model
    uncapped = copy.deepcopy(model)
    uncapped.config.final_logit_softcapping = None
    ids = torch.randint(4, 260, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, raw = model(input_ids=ids).logits, uncapped(input_ids=ids).logits
    cap = model.config.final_logit_softcapping
    assert cap == 0.5 and float(raw.abs().max()) > cap, "the cap must bend these random logits"
    torch.testing.assert_close(logits, cap * torch.tanh(raw / cap))
