"""lowrank: a truly low-rank weight is reproduced by two thin Linears; only FLOP-cutting ranks are used."""

from __future__ import annotations

import copy

import pytest
import torch

from unbottle.core.errors import ConfigError
from unbottle.passes import apply_, parse_pass
from unbottle.passes.lowrank import LowRankConfig
from unbottle.sources import Loaded, ModelInfo

IDS = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))  # (B, T)


def wrap(model, loaded: Loaded | None = None) -> Loaded:
    info = (
        loaded.info
        if loaded
        else ModelInfo(spec="test", source_kind="test", task="causal-lm", architecture="?")
    )
    return Loaded(model, loaded.tokenizer if loaded else None, info)


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def linear_macs(model) -> int:
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def with_spectrum(singular_values: list[float], out_features: int, in_features: int, bias: bool = False):
    """A Linear whose weight has exactly these singular values (random orthonormal bases)."""
    gen = torch.Generator().manual_seed(0)
    k = len(singular_values)
    u = torch.linalg.qr(torch.randn(out_features, k, generator=gen)).Q  # (out, k)
    v = torch.linalg.qr(torch.randn(in_features, k, generator=gen)).Q  # (in, k)
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(u @ torch.diag(torch.tensor(singular_values)) @ v.T)
    return linear


def test_lowrank_skips_every_full_rank_layer_because_no_rank_cuts_flops(tiny_llama):
    new, [report] = apply_(tiny_llama, LowRankConfig(energy=1.0))
    assert report.touched == [] and report.params_after == report.params_before
    reasons = {n: r for n, r in report.skipped.items() if n != "lm_head"}
    assert len(reasons) == 14 and all("would not reduce FLOPs" in r for r in reasons.values())
    assert reasons["model.layers.0.self_attn.q_proj"].startswith("rank 64 would not reduce FLOPs")
    torch.testing.assert_close(logits(new.model), logits(tiny_llama.model), rtol=0, atol=0)


def test_lowrank_reproduces_rank_8_weights_and_cuts_params_and_macs(tiny_llama):
    model = copy.deepcopy(tiny_llama.model)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, linear in model.named_modules():
            if isinstance(linear, torch.nn.Linear) and name != "lm_head":
                out_features, in_features = linear.weight.shape
                a = torch.randn(out_features, 8, generator=gen)
                b = torch.randn(8, in_features, generator=gen)
                linear.weight.copy_(a @ b / (8 * in_features) ** 0.5)  # rank 8, usual scale
    reference = logits(model)
    x = torch.randn(5, 64, generator=gen)
    layer_reference = model.model.layers[0].mlp.up_proj(x)
    macs_before = linear_macs(model)
    new, [report] = apply_(wrap(model, tiny_llama), LowRankConfig(energy=0.999999))
    pruned = new.model
    assert len(report.touched) == 14 and report.skipped == {"lm_head": "excluded by exclude=lm_head"}
    up = pruned.model.layers[0].mlp.up_proj
    assert isinstance(up, torch.nn.Sequential) and [m.weight.shape for m in up] == [(8, 64), (128, 8)]
    torch.testing.assert_close(up(x), layer_reference, rtol=0, atol=1e-5, msg="factorised layer differs")
    torch.testing.assert_close(logits(pruned), reference, rtol=0, atol=1e-5, msg="factorised model differs")
    # per layer: q/o 64·64 → 8·128, k/v 32·64 → 8·96, MLP 128·64 → 8·192; lm_head 64·512 untouched
    per_layer_before, per_layer_after = 2 * 4096 + 2 * 2048 + 3 * 8192, 2 * 1024 + 2 * 768 + 3 * 1536
    assert report.params_before - report.params_after == 2 * (per_layer_before - per_layer_after) == 57344
    assert macs_before - linear_macs(pruned) == 57344  # 106496 → 49152 multiply-adds per token
    assert "ranks 8–8" in report.notes[1]


@pytest.mark.parametrize(("energy", "rank"), [(0.75, 1), (0.9, 2), (0.95, 3), (0.99, 4), (1.0, 4)])
def test_lowrank_energy_picks_the_smallest_rank_keeping_that_fraction_of_squared_singular_values(
    energy, rank
):
    # σ² = 64, 16, 4, 1 of 85: cumulative 0.753, 0.941, 0.988, 1.0
    model = torch.nn.Sequential(with_spectrum([8.0, 4.0, 2.0, 1.0], 64, 48))
    x = torch.randn(3, 48)
    new, [report] = apply_(wrap(model), LowRankConfig(energy=energy, exclude=()))
    assert report.touched == ["0"]
    first, second = new.model[0]
    assert (first.out_features, second.in_features) == (rank, rank)
    if rank == 4:
        torch.testing.assert_close(new.model(x), model(x), rtol=0, atol=1e-5)


def test_lowrank_param_budget_sets_the_rank_and_keeps_the_bias_on_the_second_factor():
    linear = with_spectrum(torch.linspace(2, 1, 64).tolist(), 64, 128, bias=True)
    with torch.no_grad():
        linear.bias.uniform_(-1, 1)
    new, [report] = apply_(wrap(torch.nn.Sequential(linear)), LowRankConfig(param_budget=0.25, exclude=()))
    first, second = new.model[0]
    rank = int(0.25 * 64 * 128 // (64 + 128))
    assert rank == 10 and first.out_features == rank
    assert rank * (64 + 128) <= 0.25 * 64 * 128
    assert first.bias is None and torch.equal(second.bias, linear.bias)
    assert report.params_before - report.params_after == 64 * 128 - rank * (64 + 128)
    x = torch.zeros(1, 128)
    torch.testing.assert_close(new.model(x), linear(x), msg="bias not carried over")


def test_lowrank_config_round_trips_and_is_not_saveable():
    config = parse_pass("lowrank:energy=0.9,param_budget=0.5,exclude=lm_head|o_proj")
    assert config == LowRankConfig(energy=0.9, param_budget=0.5, exclude=("lm_head", "o_proj"))
    assert LowRankConfig.from_json(config.to_json()) == config
    assert parse_pass(config.label()) == config
    assert parse_pass("lowrank:param_budget=none").param_budget is None
    assert LowRankConfig.saveable is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("energy=0", r"energy=0.0 given; allowed: 0 < energy ≤ 1"),
        ("energy=1.5", r"energy=1.5 given; allowed: 0 < energy ≤ 1"),
        ("param_budget=1.0", r"param_budget=1.0 given; allowed: none, or 0 < param_budget < 1"),
    ],
)
def test_bad_lowrank_config_says_what_is_allowed(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_pass(f"lowrank:{text}")
