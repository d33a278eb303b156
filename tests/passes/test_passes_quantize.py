"""The quantization passes: config parsing and validation, numerics (SQNR floors), bytes, exclusion,
tied weights, calibration, and that quantized models still decode through the bench scenarios."""

from __future__ import annotations

import pytest
import torch

from unbottle.benchmarking.scenarios import decode_once, generate_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.errors import ConfigError
from unbottle.passes import PassContext, apply_, parse_pass
from unbottle.passes.quantize import (
    DynamicInt8Config,
    StaticInt8Config,
    WeightOnlyInt4Config,
    WeightOnlyInt8Config,
)
from unbottle.sources import Loaded, ModelInfo

PROBE = torch.randint(4, 260, (2, 16), generator=torch.Generator().manual_seed(1))


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    ref, got = ref.float(), got.float()
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum()))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(PROBE).logits.float()


def calibration(seed: int, scale: int = 1):
    """Two (2, 32) batches of byte tokens, the same on every call; seed and scale change them."""

    def batches():
        gen = torch.Generator().manual_seed(seed)
        return [torch.randint(4, 4 + 64 * scale, (2, 32), generator=gen) for _ in range(2)]

    return batches


def context(tiny_llama, seed: int = 0) -> PassContext:
    return PassContext(tokenizer=tiny_llama.tokenizer, calibration=calibration(seed))


# (pass text, per-layer SQNR floor on random inputs, logits SQNR floor), in dB. Measured on tiny-llama:
# dynamic torch 33.6 / 33.4, torchao 39.2 / 41.0, wo-int8 42.4 / 40.7, torchao wo-int8 43.1 / 41.0,
# block-wise 43.8 / 41.4, int4 g32 20.7 / 20.1, g64 19.7 / 19.0, symmetric g64 18.6 / 18.0, static 37.1.
CASES = [
    ("dynamic-int8", 30, 30),
    ("dynamic-int8:backend=torchao", 35, 36),
    ("dynamic-int8:per_channel=false", 30, 30),
    ("wo-int8", 38, 37),
    ("wo-int8:backend=torchao", 38, 37),
    ("wo-int8:backend=torchao,group_size=32", 38, 37),
    ("wo-int4:group_size=32", 18, 17),
    ("wo-int4:group_size=64", 17, 16),
    ("wo-int4:group_size=64,symmetric=true", 16, 15),
    ("static-int8", None, 32),
]


@pytest.fixture(scope="module")
def quantized(tiny_llama):
    """Each case applied once to a deep copy of tiny-llama: ``text → (Loaded, PassReport)``."""
    return {text: _apply(tiny_llama, text) for text, _, _ in CASES}


def _apply(tiny_llama, text):
    new, [report] = apply_(tiny_llama, parse_pass(text), context(tiny_llama))
    return new, report


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "wo-int4:group_size=64,symmetric=true,exclude=lm_head|o_proj",
            WeightOnlyInt4Config(group_size=64, symmetric=True, exclude=("lm_head", "o_proj")),
        ),
        ("dynamic-int8:backend=torchao,per_channel=false", DynamicInt8Config("torchao", False)),
        ("wo-int8:backend=torchao,group_size=32,exclude=", WeightOnlyInt8Config("torchao", 32, ())),
        (
            "static-int8:calibration_batches=2,calibration_tokens=64,per_channel=false",
            StaticInt8Config(2, 64, False),
        ),
    ],
)
def test_parse_pass_round_trips_quantize_configs(text, expected):
    cfg = parse_pass(text)
    assert cfg == expected
    assert parse_pass(cfg.label()) == cfg, cfg.label()
    assert type(cfg).from_json(cfg.to_json()) == cfg
    assert not type(cfg).saveable


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: parse_pass("wo-int4:group_size=48"), ["group_size=48", "allowed: 32, 64, 128"]),
        (lambda: parse_pass("dynamic-int8:backend=onnx"), ["backend='onnx'", "allowed: torch, torchao"]),
        (lambda: parse_pass("wo-int8:group_size=32"), ["needs backend=torchao"]),
        (lambda: parse_pass("wo-int8:backend=torchao,group_size=1"), ["integer ≥ 2"]),
        (lambda: parse_pass("static-int8:calibration_batches=0"), ["calibration_batches=0", "integer ≥ 1"]),
        (lambda: WeightOnlyInt4Config(symmetric="yes"), ["symmetric='yes'", "allowed: true, false"]),
        (lambda: WeightOnlyInt8Config(exclude=3), ["exclude=3", "'a|b'"]),
    ],
)
def test_quantize_configs_refuse_bad_values_naming_what_is_allowed(make, words):
    with pytest.raises(ConfigError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_exclude_accepts_a_bar_separated_string():
    assert WeightOnlyInt4Config(exclude="lm_head|o_proj").exclude == ("lm_head", "o_proj")
    assert DynamicInt8Config().exclude == ("lm_head",) and WeightOnlyInt8Config().exclude == ()


@pytest.mark.parametrize(("text", "layer_floor", "_"), [c for c in CASES if c[1] is not None])
def test_each_quantized_linear_stays_above_its_sqnr_floor_on_random_inputs(
    tiny_llama, quantized, text, layer_floor, _
):
    new, report = quantized[text]
    assert len(report.touched) >= 14, report.skipped
    gen = torch.Generator().manual_seed(0)
    for name in report.touched:
        ref_layer, q_layer = tiny_llama.model.get_submodule(name), new.model.get_submodule(name)
        assert q_layer is not ref_layer
        x = torch.randn(2, 5, ref_layer.in_features, generator=gen)  # (B, T, C)
        with torch.no_grad():
            db = sqnr_db(ref_layer(x), q_layer(x))
        assert db >= layer_floor, f"{text}: {name} output SQNR {db:.1f} dB < {layer_floor} dB"


@pytest.mark.parametrize(("text", "_", "logits_floor"), CASES)
def test_quantized_model_logits_stay_above_their_sqnr_floor(tiny_llama, quantized, text, _, logits_floor):
    new, _report = quantized[text]
    db = sqnr_db(logits(tiny_llama.model), logits(new.model))
    assert db >= logits_floor, f"{text}: logits SQNR {db:.1f} dB < {logits_floor} dB"


def test_static_int8_layers_stay_above_floor_on_in_distribution_inputs(tiny_llama, quantized):
    # Static scales cover the calibrated range; random N(0, 1) inputs exceed it and clip by design.
    new, report = quantized["static-int8"]
    inputs = _layer_inputs(tiny_llama.model, report.touched)
    for name in report.touched:
        with torch.no_grad():
            db = sqnr_db(
                tiny_llama.model.get_submodule(name)(inputs[name]),
                new.model.get_submodule(name)(inputs[name]),
            )
        assert db >= 20, f"{name}: static int8 output SQNR {db:.1f} dB on the probe's activations"


def _layer_inputs(model, names):
    seen = {}
    hooks = [
        model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen.setdefault(n, a[0].clone()))
        for n in names
    ]
    logits(model)
    for h in hooks:
        h.remove()
    return seen


# Share of the touched layers' fp32 bytes saved: int8 ≈ 3/4 less scales, int4 ≈ 7/8 less scales
# and zeros (bf16 per group), torch's qint8 a little less (it stores 16 bytes of qparams per channel).
SAVED = {
    "dynamic-int8": (0.68, 0.75),
    "wo-int8": (0.73, 0.75),
    "wo-int8:backend=torchao,group_size=32": (0.70, 0.75),
    "wo-int4:group_size=32": (0.83, 0.85),
    "wo-int4:group_size=64": (0.85, 0.87),
    "static-int8": (0.72, 0.75),
}


@pytest.mark.parametrize("text", list(SAVED))
def test_bytes_shrink_by_the_expected_factor(tiny_llama, quantized, text):
    _, report = quantized[text]
    touched_bytes = sum(tiny_llama.model.get_submodule(n).weight.numel() * 4 for n in report.touched)
    saved = (report.bytes_before - report.bytes_after) / touched_bytes
    low, high = SAVED[text]
    assert low <= saved <= high, f"{text}: saved {saved:.3f} of the touched weights' bytes"
    assert report.params_after == report.params_before, "quantized weights still count their elements"


def test_excluded_layers_keep_bit_identical_float_weights(tiny_llama):
    for text in ("wo-int8:exclude=lm_head|o_proj", "wo-int4:group_size=32,exclude=lm_head|o_proj"):
        new, [report] = apply_(tiny_llama, parse_pass(text))
        excluded = [n for n in report.skipped if n == "lm_head" or n.endswith("o_proj")]
        assert len(excluded) == 3 and not set(excluded) & set(report.touched)
        for name in excluded:
            weight = new.model.get_submodule(name).weight
            assert type(weight) is torch.nn.Parameter and weight.dtype == torch.float32
            assert torch.equal(weight, tiny_llama.model.get_submodule(name).weight), name
            assert report.skipped[name] == "excluded (exclude=lm_head|o_proj)"


def test_int4_group_128_skips_layers_it_does_not_divide_with_the_reason(tiny_llama):
    new, [report] = apply_(tiny_llama, parse_pass("wo-int4:group_size=128"))
    assert sorted(report.touched) == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert (
        report.skipped["model.layers.0.self_attn.q_proj"]
        == "in_features 64 is not divisible by group_size 128"
    )
    assert type(new.model.model.layers[0].self_attn.q_proj.weight) is torch.nn.Parameter


@pytest.fixture(scope="module")
def tied_llama():
    """tiny-llama with lm_head tied to the embedding, as SmolLM2 is."""
    import transformers

    from unbottle.sources.tiny import TINY_MODELS, byte_tokenizer

    config = transformers.LlamaConfig(**{**TINY_MODELS["tiny-llama"][2], "tie_word_embeddings": True})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    info = ModelInfo(spec="tied-llama", source_kind="tiny", task="causal-lm", architecture="llama")
    return Loaded(model=model, tokenizer=byte_tokenizer(), info=info)


def _apply_tied(tied_llama, text):
    return apply_(tied_llama, parse_pass(text), context(tied_llama))


@pytest.mark.parametrize(
    "text", ["wo-int8:exclude=lm_head", "wo-int4:group_size=32", "dynamic-int8", "static-int8"]
)
def test_tied_embedding_untouched_and_still_tied_when_lm_head_is_excluded(tied_llama, text):
    new, [report] = _apply_tied(tied_llama, text)
    model = new.model
    assert "lm_head" in report.skipped
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model.model.embed_tokens.weight, tied_llama.model.model.embed_tokens.weight)
    assert model.config.tie_word_embeddings and not any("tied" in n for n in report.notes)


@pytest.mark.parametrize(
    "text",
    [
        "wo-int8",
        "wo-int4:group_size=32,exclude=",
        "dynamic-int8:exclude=",
        "dynamic-int8:backend=torchao,exclude=",
    ],
)
def test_quantizing_a_tied_lm_head_unties_it_and_leaves_the_embedding_float(tied_llama, text):
    new, [report] = _apply_tied(tied_llama, text)
    model = new.model
    embedding = model.model.embed_tokens.weight
    assert "lm_head" in report.touched
    assert type(embedding) is torch.nn.Parameter and embedding.dtype == torch.float32
    assert torch.equal(embedding, tied_llama.model.model.embed_tokens.weight)
    assert any("lm_head.weight was tied to model.embed_tokens.weight" in n for n in report.notes), (
        report.notes
    )
    assert not model.config.tie_word_embeddings and "lm_head.weight" not in model.all_tied_weights_keys
    model.tie_weights()  # must not re-tie (which would throw the quantized lm_head away)
    assert model.lm_head.weight is not embedding
    db = sqnr_db(logits(tied_llama.model), logits(model))
    assert db >= 15, f"{text}: logits SQNR {db:.1f} dB after untying"


@pytest.mark.parametrize("text", [c[0] for c in CASES])
def test_quantized_models_decode_and_generate_through_the_bench_scenarios(tiny_llama, quantized, text):
    new, _ = quantized[text]
    tokens = []
    samples = decode_once(new.model, PROBE[:1, :8], 4, CpuTimer(), tokens)
    assert len(samples["token_latency"]) == 3 and torch.cat(tokens, 1).shape == (1, 4)
    assert generate_once(new.model, PROBE[:1, :8], 3, CpuTimer())["tokens_per_s"][0] > 0


def test_static_int8_scales_come_from_the_calibration_data(tiny_llama):
    first, [report] = apply_(tiny_llama, parse_pass("static-int8"), context(tiny_llama, seed=0))
    same, _ = apply_(tiny_llama, parse_pass("static-int8"), context(tiny_llama, seed=0))
    wider = PassContext(tokenizer=tiny_llama.tokenizer, calibration=calibration(seed=5, scale=3))
    other, _ = apply_(tiny_llama, parse_pass("static-int8"), wider)
    name = "model.layers.0.self_attn.q_proj"

    def scale(loaded):
        return float(loaded.model.get_submodule(name).weight.act_quant_scale)

    assert scale(first) == scale(same)
    assert scale(first) != scale(other)
    batches = calibration(seed=0)()
    amax = max(float(x.abs().max()) for x in _layer_inputs_for(tiny_llama.model, name, batches))
    assert scale(first) == pytest.approx(amax / 127, rel=1e-5)
    assert "calibrated on 2 batches (128 tokens) from the caller's calibration data" in report.notes


def _layer_inputs_for(model, name, batches):
    seen = []
    hook = model.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch, use_cache=False)
    hook.remove()
    return seen


def test_static_int8_calibrates_on_the_corpus_when_the_caller_gives_no_data(tiny_llama):
    cfg = parse_pass("static-int8:calibration_batches=2,calibration_tokens=32")
    new, [report] = apply_(tiny_llama, cfg, PassContext(tokenizer=tiny_llama.tokenizer))
    assert "calibrated on 2 batches (64 tokens) from the packaged corpus (persuasion.txt)" in report.notes
    again, _ = apply_(tiny_llama, cfg, PassContext(tokenizer=tiny_llama.tokenizer))
    torch.testing.assert_close(logits(new.model), logits(again.model), msg="re-applying the recipe differs")


def test_static_int8_layer_accepts_two_dimensional_inputs(quantized):
    layer = quantized["static-int8"][0].model.model.layers[0].mlp.down_proj
    x = torch.randn(2, 5, 128)
    with torch.no_grad():
        torch.testing.assert_close(layer(x.reshape(10, 128)), layer(x).reshape(10, -1))


def test_torchao_passes_say_torchao_is_missing_when_it_is_not_installed(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a)
    )
    assert "needs the package 'torchao'" in WeightOnlyInt4Config().missing()[0]
    assert "needs the package 'torchao'" in StaticInt8Config().missing()[0]
    assert "needs the package 'torchao'" in DynamicInt8Config(backend="torchao").missing()[0]
    assert DynamicInt8Config().missing() == [] and WeightOnlyInt8Config().missing() == []
    assert StaticInt8Config.requires.calibration


@pytest.mark.slow
def test_wo_int8_on_smollm2_changes_perplexity_by_under_two_percent():
    from unbottle.evaluation import perplexity
    from unbottle.models import load

    base = load("smollm2-135m")
    new, [report] = apply_(base, parse_pass("wo-int8"))
    assert "lm_head" in report.touched and report.bytes_after < 0.5 * report.bytes_before
    before = perplexity(base, eval_tokens=1024).value
    after = perplexity(new, eval_tokens=1024).value
    change = after / before - 1
    assert abs(change) < 0.02, f"perplexity {before:.3f} → {after:.3f} ({100 * change:+.2f}%)"
