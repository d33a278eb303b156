"""prune: exactly the requested fraction of the smallest weights becomes zero, and nothing else changes."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from unbottle.core.errors import ConfigError
from unbottle.passes import apply_, parse_pass
from unbottle.passes.prune import MagnitudePruneConfig
from unbottle.sources import Loaded, ModelInfo

LINEARS_PER_LAYER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linears(model) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def wrap(model, loaded: Loaded | None = None) -> Loaded:
    info = (
        loaded.info
        if loaded
        else ModelInfo(spec="test", source_kind="test", task="causal-lm", architecture="?")
    )
    return Loaded(model, loaded.tokenizer if loaded else None, info)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_prune_layer_scope_zeroes_exactly_the_smallest_fraction_of_every_layer(tiny_llama, sparsity):
    new, [report] = apply_(tiny_llama, MagnitudePruneConfig(sparsity=sparsity))
    before, after = linears(tiny_llama.model), linears(new.model)
    assert len(report.touched) == 14 and report.skipped == {"lm_head": "excluded by exclude=lm_head"}
    for name in report.touched:
        old, w = before[name].weight, after[name].weight
        zero = w == 0
        assert int(zero.sum()) == round(sparsity * w.numel()), name
        assert torch.equal(w[~zero], old[~zero]), f"{name}: kept weights changed"
        assert old[zero].abs().max() <= old[~zero].abs().min(), f"{name}: a larger weight was zeroed"
    assert torch.equal(after["lm_head"].weight, before["lm_head"].weight), "excluded lm_head changed"
    assert torch.equal(new.model.model.embed_tokens.weight, tiny_llama.model.model.embed_tokens.weight)
    assert any("does not speed up dense CPU kernels" in note for note in report.notes)
    assert int((before["model.layers.0.mlp.up_proj"].weight == 0).sum()) == 0, "the fixture was modified"


def test_prune_global_scope_hits_the_total_exactly_and_takes_more_from_small_weight_layers(tiny_llama):
    model = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.mul_(0.1)  # a layer of small weights
    new, [report] = apply_(wrap(model, tiny_llama), MagnitudePruneConfig(sparsity=0.4, scope="global"))
    pruned = linears(new.model)
    weights = [pruned[n].weight for n in report.touched]
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == round(0.4 * total)
    per_layer = {n: float((pruned[n].weight == 0).float().mean()) for n in report.touched}
    assert per_layer["model.layers.0.self_attn.q_proj"] > 0.95, per_layer
    assert min(per_layer.values()) < 0.4 < max(per_layer.values())
    kept = torch.cat([w[w != 0].abs() for w in weights])
    zeroed = torch.cat([linears(model)[n].weight[pruned[n].weight == 0].abs() for n in report.touched])
    assert zeroed.max() <= kept.min(), "global pruning zeroed a weight larger than one it kept"


def test_prune_2_4_keeps_the_two_largest_of_every_group_of_four_inputs(tiny_llama):
    new, [report] = apply_(tiny_llama, parse_pass("prune:pattern=2:4"))
    before, after = linears(tiny_llama.model), linears(new.model)
    assert len(report.touched) == 14
    for name in report.touched:
        old = before[name].weight.reshape(before[name].out_features, -1, 4)  # (out, in/4, 4)
        new_groups = after[name].weight.reshape(old.shape)
        assert torch.equal((new_groups == 0).sum(dim=-1), torch.full(old.shape[:2], 2)), (
            f"{name}: not 2 zeros per group"
        )
        largest = old.abs().topk(2, dim=-1).indices
        assert torch.equal(new_groups.gather(-1, largest), old.gather(-1, largest)), (
            f"{name}: a top-2 weight lost"
        )
    assert torch.equal(after["lm_head"].weight, before["lm_head"].weight)


def test_prune_2_4_skips_a_layer_whose_inputs_are_not_a_multiple_of_four():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Linear(8, 4))
    new, [report] = apply_(wrap(model), MagnitudePruneConfig(pattern="2:4", exclude=()))
    assert report.touched == ["1"]
    assert report.skipped == {"0": "in_features=6 is not a multiple of 4, so 2:4 groups don't fit"}
    assert torch.equal(new.model[0].weight, model[0].weight)


def test_prune_skips_an_lm_head_tied_to_the_embedding_even_when_not_excluded():
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    new, [report] = apply_(wrap(model), MagnitudePruneConfig(exclude=()))
    assert report.skipped["lm_head"].startswith("weight is tied to model.embed_tokens.weight")
    assert torch.equal(new.model.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_pruned_model_is_plain_weights_that_save_and_load(tiny_llama, tmp_path):
    new, _ = apply_(tiny_llama, MagnitudePruneConfig(sparsity=0.6))
    model = new.model
    assert MagnitudePruneConfig.saveable
    assert not any(hasattr(m, "parametrizations") or m._forward_pre_hooks for m in model.modules())
    assert {n for n, _ in model.named_buffers()} == {n for n, _ in tiny_llama.model.named_buffers()}
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    for name, param in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], param), name


def test_parse_pass_round_trips_prune_config():
    config = parse_pass("prune:sparsity=0.7,scope=global,exclude=lm_head|o_proj")
    assert config == MagnitudePruneConfig(sparsity=0.7, scope="global", exclude=("lm_head", "o_proj"))
    assert MagnitudePruneConfig.from_json(config.to_json()) == config
    assert parse_pass(config.label()) == config
    assert parse_pass("prune:pattern=2:4,sparsity=0.5").pattern == "2:4"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sparsity=1.5", r"sparsity=1.5 given; allowed: 0 < sparsity < 1"),
        ("sparsity=0", r"sparsity=0.0 given; allowed: 0 < sparsity < 1"),
        ("pattern=3:4", r"pattern '3:4' given; allowed: unstructured, 2:4"),
        ("scope=row", r"scope 'row' given; allowed: global, layer"),
        ("pattern=2:4,sparsity=0.75", r"pattern=2:4 zeroes exactly 2 of every 4 weights, so sparsity is 0.5"),
        ("pattern=2:4,scope=global", r"scope=global has no meaning; use scope=layer"),
    ],
)
def test_bad_prune_config_says_what_is_allowed(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_pass(f"prune:{text}")
