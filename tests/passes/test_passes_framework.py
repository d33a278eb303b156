"""The pass framework: parsing, composition, requirements, precision, recipes, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.core.errors import ConfigError, PassError
from unbottle.models import load
from unbottle.passes import apply_, check_composition, parse_pass
from unbottle.passes.precision import PrecisionConfig

PROBE = torch.tensor([[1, 44, 105, 108, 108, 111, 300, 511]])


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    ref, got = ref.float(), got.float()
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum()))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(PROBE).logits.float()


def test_parse_pass_reads_types_lists_and_defaults():
    cfg = parse_pass("precision:dtype=bfloat16,keep_fp32=lm_head|norm")
    assert cfg == PrecisionConfig(dtype="bfloat16", keep_fp32=("lm_head", "norm"))
    assert cfg.label() == "precision:keep_fp32=lm_head|norm"
    assert PrecisionConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("precison", ["unknown pass 'precison'", "did you mean 'precision'", "available:"]),
        ("precision:foo=1", ["'foo=1' given", "allowed: dtype=<bfloat16|float16>"]),
        ("precision:dtype=int3", ["dtype 'int3'", "allowed: bfloat16, float16"]),
        ("compile:dynamic=maybe", ["dynamic='maybe' is not a valid bool"]),
    ],
)
def test_parse_pass_errors_say_what_is_allowed(text, words):
    with pytest.raises(ConfigError) as info:
        parse_pass(text)
    for word in words:
        assert word in str(info.value)


def test_composition_refuses_torch_pass_after_compile():
    with pytest.raises(ConfigError, match="'precision' \\(torch\\) cannot follow 'compile'"):
        check_composition([parse_pass("compile"), parse_pass("precision")])
    check_composition([parse_pass("precision"), parse_pass("compile")])


def test_composition_refuses_export_after_torch_quantization():
    with pytest.raises(ConfigError, match="cannot export what 'wo-int8' produce.*onnx:quantize=int8-block"):
        check_composition([parse_pass("wo-int8"), parse_pass("onnx")])
    check_composition([parse_pass("prune-structured"), parse_pass("onnx:quantize=int8-block")])


def test_unavailable_pass_is_refused_with_the_reason(tiny_llama, monkeypatch):
    for user in ("base", "precision"):  # a CPU without any of the flags the passes look for
        monkeypatch.setattr(f"unbottle.passes.{user}.cpu_info", lambda: {"flags": {}})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PassError, match="fp16 needs a GPU or a CPU with AVX512-FP16"):
        apply_(tiny_llama, parse_pass("precision:dtype=float16"))
    assert "AVX512_BF16" in PrecisionConfig().missing()[0]


def test_precision_bf16_halves_bytes_keeps_lm_head_fp32_and_stays_close(tiny_llama):
    new, [report] = apply_(tiny_llama, parse_pass("precision:keep_fp32=lm_head"))
    assert new.model.lm_head.weight.dtype == torch.float32
    assert new.model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert tiny_llama.model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32, "baseline untouched"
    lm_head_bytes = tiny_llama.model.lm_head.weight.numel() * 4
    expected = (report.bytes_before - lm_head_bytes) / 2 + lm_head_bytes
    assert report.bytes_after == pytest.approx(expected, rel=0.01)
    assert report.skipped == {"lm_head": "kept in float32"}
    db = sqnr_db(logits(tiny_llama.model), logits(new.model))
    assert db > 30, f"bf16 logits SQNR {db:.1f} dB"
    assert new.info.dtype == "bfloat16"


def test_compile_with_static_cache_decodes_the_same_tokens(tiny_llama):
    from unbottle.benchmarking.scenarios import decode_once
    from unbottle.benchmarking.timing import CpuTimer
    from unbottle.runtime.caches import STATIC_CACHE_ATTR

    compiled, [report] = apply_(tiny_llama, parse_pass("compile:cache_bucket=64"))
    assert getattr(compiled.model, STATIC_CACHE_ATTR) == 64
    prompt = PROBE[:, :6]
    eager, fast = [], []
    decode_once(tiny_llama.model, prompt, 6, CpuTimer(), eager)
    decode_once(compiled.model, prompt, 6, CpuTimer(), fast)
    assert torch.equal(torch.cat(eager, 1), torch.cat(fast, 1))


def test_apply_cli_saves_a_recipe_that_every_verb_loads(tmp_path):
    out = tmp_path / "tiny-bf16"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["apply", "tiny-llama", "--pass", "precision:keep_fp32=lm_head", "-o", str(out), "--json", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert doc["reports"][0]["name"] == "precision"
    recipe = json.loads((out / "unbottle-recipe.json").read_text())
    assert recipe["source"] == "tiny-llama" and recipe["passes"][0]["dtype"] == "bfloat16"
    restored = load(str(out))
    assert restored.info.source_kind == "recipe"
    assert restored.model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    expected, _ = apply_(load("tiny-llama"), parse_pass("precision:keep_fp32=lm_head"))
    torch.testing.assert_close(logits(restored.model), logits(expected.model))
    again = runner.invoke(app, ["apply", "tiny-llama", "--pass", "precision", "-o", str(out), "--quiet"])
    assert again.exit_code == 2 and "exists" in again.stderr and "--overwrite" in again.stderr
    bench = runner.invoke(
        app,
        [
            "bench",
            str(out),
            "--scenarios",
            "prefill",
            "--prompt-lengths",
            "8",
            "--min-time",
            "0",
            "--min-repeats",
            "2",
            "--threads",
            "1",
            "--quiet",
        ],
    )
    assert bench.exit_code == 0, bench.output


def test_passes_cli_lists_every_pass_with_availability():
    result = CliRunner().invoke(app, ["passes", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout.strip().splitlines()[-1])}
    assert {"precision", "compile", "wo-int8", "prune", "lowrank", "onnx"} <= set(rows)
    assert rows["precision"]["params"].startswith("dtype=bfloat16")
    for row in rows.values():
        assert row["available"] or row["why_not"], "an unavailable pass must say why"
