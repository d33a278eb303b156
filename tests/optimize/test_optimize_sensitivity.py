"""Per-layer sensitivity: simulated ORT blocks and applied torch passes rank layers by output error."""

from __future__ import annotations

import torch

from unbottle.optimizer.candidates import parse_candidate
from unbottle.optimizer.sensitivity import fake_quantize_blocks, layer_sensitivity
from unbottle.passes.base import linear_layers


def test_fake_quantization_error_shrinks_with_more_bits():
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    err = {bits: (fake_quantize_blocks(w, bits, 32, False) - w).pow(2).mean() for bits in (4, 8)}
    assert err[8] < err[4] / 100
    for symmetric in (False, True):
        q = fake_quantize_blocks(w, 4, 32, symmetric)
        per_block = q.reshape(64, 4, 32)
        assert max(len(torch.unique(b)) for b in per_block.reshape(-1, 32)) <= 16  # 4 bits: ≤16 levels


def test_values_on_the_grid_survive_exactly():
    levels = torch.arange(-8, 8, dtype=torch.float32) * 0.25
    w = levels.repeat(4, 2)  # every block spans the full asymmetric int4 range: 16 steps of 0.25
    assert torch.allclose(fake_quantize_blocks(w, 4, 32, symmetric=False), w)


def _copy(loaded):
    import copy

    return type(loaded)(copy.deepcopy(loaded.model), loaded.tokenizer, loaded.info)


def test_simulated_int4_blocks_score_every_linear_and_hurt_more_than_int8(tiny_llama):
    names = set(linear_layers(tiny_llama.model))
    s8, how8 = layer_sensitivity(_copy(tiny_llama), list(parse_candidate("onnx:quantize=int8-block").configs))
    s4, _ = layer_sensitivity(_copy(tiny_llama), list(parse_candidate("onnx:quantize=int4-block").configs))
    assert "simulated 8-bit" in how8
    assert (
        set(s8) == set(s4) == {n for n in names if linear_layers(tiny_llama.model)[n].in_features % 32 == 0}
    )
    assert all(s4[n] > s8[n] > 0 for n in s8)


def test_applied_torch_pass_measures_lm_head_even_when_it_is_excluded(tiny_llama):
    scores, how = layer_sensitivity(_copy(tiny_llama), list(parse_candidate("wo-int8").configs))
    assert how.startswith("applied wo-int8")
    assert "lm_head" in scores
    assert all(v >= 0 for v in scores.values())
    none, why = layer_sensitivity(_copy(tiny_llama), list(parse_candidate("compile").configs))
    assert none == {} and "no pass" in why
