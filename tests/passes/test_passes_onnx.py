"""The onnx pass and OrtCausalLM: export with the KV cache, ORT quantizers, and the model interface.

One export of tiny-llama (and its int8/int4 variants, quantized from the cached float graph) is
shared by the module; each test checks numbers against the torch model it came from.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from speculation_checks import assert_lookup_exact
from unbottle.benchmarking.scenarios import decode_once, generate_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.errors import ConfigError, PassError
from unbottle.evaluation import agreement, load_task, multiple_choice, perplexity
from unbottle.passes import apply_, parse_pass
from unbottle.passes.onnx import OnnxExportConfig
from unbottle.runtime import OrtCausalLM
from unbottle.sources import Loaded

pytestmark = pytest.mark.skipif(
    OnnxExportConfig().missing() != [], reason="needs onnx, onnxruntime and onnxscript"
)

TEXT = "It was a truth universally acknowledged, that a single man in possession of a good fortune. " * 12


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum()))


@pytest.fixture(scope="module")
def variants(tiny_llama: Loaded, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Loaded, list]]:
    """``{"none" | "int8-block" | "int4-block": (loaded ORT model, pass reports)}``, exported once."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(cache))
        for quantize in ("none", "int8-block", "int4-block"):
            out[quantize] = apply_(tiny_llama, [OnnxExportConfig(quantize=quantize, exclude=("lm_head",))])
    return out


@pytest.fixture(scope="module")
def ort_llama(variants) -> Loaded:
    return variants["none"][0]


def _steps(model, prompt: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Logits of a prefill on ``prompt`` then one cached step per column of ``tokens``, one cache reused."""
    kw = {"cache": DynamicCache(config=model.config), "use_cache": True}
    with torch.inference_mode():
        out = [model(input_ids=prompt, **kw).logits]
        out += [model(input_ids=tokens[:, i : i + 1], **kw).logits for i in range(tokens.shape[1])]
    return out


def test_onnx_logits_equal_torch_for_prefill_and_cached_decode_steps(tiny_llama, ort_llama):
    g = torch.Generator().manual_seed(1)
    prompt, tokens = torch.randint(0, 512, (2, 7), generator=g), torch.randint(0, 512, (2, 4), generator=g)
    ref, got = _steps(tiny_llama.model, prompt, tokens), _steps(ort_llama.model, prompt, tokens)
    for step, (r, o) in enumerate(zip(ref, got, strict=True)):
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4, msg=lambda m, s=step: f"step {s}: {m}")


def test_onnx_logits_to_keep_and_padding_mask_follow_torch(tiny_llama, ort_llama):
    x = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(x)
    mask[1, 6:] = 0  # right padding, as multiple_choice pads
    with torch.inference_mode():
        ref = tiny_llama.model(input_ids=x, attention_mask=mask, use_cache=False).logits
        got = ort_llama.model(input_ids=x, attention_mask=mask, use_cache=False).logits
        last = ort_llama.model(input_ids=x, use_cache=False, logits_to_keep=1).logits
        full = tiny_llama.model(input_ids=x, use_cache=False).logits
    torch.testing.assert_close(got[0], ref[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1, :6], ref[1, :6], atol=1e-4, rtol=1e-4, msg="unpadded positions")
    assert last.shape == (2, 1, 512)
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-4, rtol=1e-4)


def test_decode_once_greedy_tokens_equal_torch(tiny_llama, ort_llama):
    prompt = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(3))
    ref, got = [], []
    decode_once(tiny_llama.model, prompt, 24, CpuTimer(), record=ref)
    samples = decode_once(ort_llama.model, prompt, 24, CpuTimer(), record=got)
    assert torch.equal(torch.cat(got, 1), torch.cat(ref, 1))
    assert len(samples["token_latency"]) == 23 and samples["tokens_per_s"][0] > 0


def test_generate_matches_torch_greedy_generate(tiny_llama, ort_llama):
    prompt = torch.randint(4, 512, (2, 8), generator=torch.Generator().manual_seed(4))
    kw = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=3)
    with torch.inference_mode():
        ref = tiny_llama.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kw)
        got = ort_llama.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kw)
    assert torch.equal(got, ref)
    assert generate_once(ort_llama.model, prompt, 6, CpuTimer())["tokens_per_s"][0] > 0
    with pytest.raises(ValueError, match="greedily only"):
        ort_llama.model.generate(input_ids=prompt, do_sample=True)


def test_benchmark_runs_every_scenario_on_the_ort_model(ort_llama):
    from unbottle.benchmarking import BenchConfig, benchmark

    config = BenchConfig(
        prompt_lengths=(16,),
        batch_sizes=(1, 2),
        new_tokens=4,
        threads=1,
        warmup=0,
        min_repeats=1,
        min_time_s=0,
    )
    names = {(m.name, m.params.get("batch_size")) for m in benchmark(ort_llama, config).measurements}
    assert {("prefill.tokens_per_s", 1), ("decode.tokens_per_s", 2), ("generate.tokens_per_s", 1)} <= names


def test_perplexity_equals_torch_within_1e4_relative(tiny_llama, ort_llama):
    kw = dict(text=TEXT, eval_tokens=600, window=128, stride=128, batch_size=2)
    ref, got = perplexity(tiny_llama, **kw), perplexity(ort_llama, **kw)
    assert got.value == pytest.approx(ref.value, rel=1e-4)
    assert got.scores == pytest.approx(ref.scores, rel=1e-4)


def test_agreement_and_multiple_choice_see_the_same_model(tiny_llama, ort_llama):
    kl, top1, greedy = agreement(ort_llama, tiny_llama, text=TEXT, eval_tokens=300, window=64, n_prompts=2)
    assert kl.value < 1e-8 and top1.value == 1.0 and greedy.value == 32
    task = load_task("sports_understanding")
    ref = multiple_choice(tiny_llama, task, max_items=8, batch_size=4)
    got = multiple_choice(ort_llama, task, max_items=8, batch_size=4)
    assert got.scores == ref.scores


@pytest.mark.parametrize(("quantize", "floor_db"), [("int8-block", 30.0), ("int4-block", 15.0)])
def test_block_quantization_uses_matmulnbits_and_keeps_logits_close(tiny_llama, variants, quantize, floor_db):
    loaded, (report,) = variants[quantize]
    ops = loaded.model.path.parent.joinpath("export.json").read_text()
    assert '"com.microsoft.MatMulNBits": 14' in ops, "7 Linears x 2 layers quantized, lm_head excluded"
    assert report.skipped == {"lm_head": "excluded (exclude=lm_head)"} and len(report.touched) == 14
    g = torch.Generator().manual_seed(5)
    prompt, tokens = torch.randint(0, 512, (1, 12), generator=g), torch.randint(0, 512, (1, 3), generator=g)
    ref = torch.cat([t.reshape(-1) for t in _steps(tiny_llama.model, prompt, tokens)])
    got = torch.cat([t.reshape(-1) for t in _steps(loaded.model, prompt, tokens)])
    assert sqnr_db(ref, got) >= floor_db, f"{quantize}: SQNR {sqnr_db(ref, got):.1f} dB"


def test_speculation_on_an_ort_graph_gives_its_reference_tokens_and_refuses_shared_scales(
    tiny_llama, variants, tmp_path
):
    """Weight-only int4 blocks with int8 activations: exact against the two-row reference on 20 prompts;
    per-tensor dynamic int8 (one activation scale per call) is refused before any work."""
    from unbottle.runtime.speculative import check_speculative

    accepted = assert_lookup_exact(variants["int4-block"][0].model, prompts=20, new_tokens=12, seed=5)
    assert accepted > 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path))
        dynamic = apply_(tiny_llama, [OnnxExportConfig(quantize="int8-dynamic")])[0].model
    with pytest.raises(ConfigError, match="per tensor.*would change the greedy tokens"):
        check_speculative(dynamic, "lookup")


def test_pass_report_counts_parameters_and_graph_bytes(tiny_llama, variants):
    fp32, int8, int4 = (variants[q][1][0] for q in ("none", "int8-block", "int4-block"))
    n = sum(p.numel() for p in tiny_llama.model.parameters())
    assert fp32.params_before == fp32.params_after == int4.params_after == n
    assert fp32.bytes_after == pytest.approx(fp32.bytes_before, rel=0.01), "float graph: the same weights"
    assert int4.bytes_after < int8.bytes_after < fp32.bytes_after
    assert variants["int4-block"][0].info.n_parameters == n
    assert any("verified" in note and "SQNR" in note for note in int8.notes)


def test_reapplying_reuses_the_cached_export(tiny_llama, variants, tmp_path):
    first, _ = variants["none"]
    again, (report,) = apply_(tiny_llama, [OnnxExportConfig(output=str(first.model.path.parent))])
    assert any("reused" in note for note in report.notes) and report.seconds < 5
    reopened = OrtCausalLM.load(first.model.path.parent)
    x = torch.randint(0, 512, (1, 5))
    with torch.inference_mode():
        torch.testing.assert_close(reopened(input_ids=x).logits, first.model(input_ids=x).logits)
    assert reopened.n_parameters == first.model.n_parameters


def test_session_threads_follow_torch_unless_set(ort_llama):
    model = ort_llama.model
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model(input_ids=torch.tensor([[1, 2, 3]]))
        assert model._session_threads == 1
    finally:
        torch.set_num_threads(before)
    pinned = dataclasses.replace(OnnxExportConfig(), threads=1)
    assert pinned.threads == 1


def test_onnx_config_validates_and_round_trips():
    cfg = parse_pass("onnx:quantize=int4-block,block_size=64,exclude=lm_head|o_proj,threads=1")
    assert cfg == OnnxExportConfig(
        quantize="int4-block", block_size=64, exclude=("lm_head", "o_proj"), threads=1
    )
    assert OnnxExportConfig.from_json(cfg.to_json()) == cfg
    assert cfg.label() == "onnx:quantize=int4-block,block_size=64,exclude=lm_head|o_proj,threads=1"
    with pytest.raises(ConfigError, match="allowed: none, int8-dynamic, int8-block, int4-block"):
        OnnxExportConfig(quantize="int3")
    with pytest.raises(ConfigError, match="block_size=48 given"):
        OnnxExportConfig(block_size=48)


def test_missing_names_the_absent_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    (reason,) = OnnxExportConfig().missing()
    assert reason.startswith("needs the package 'onnxruntime'") and "pip install" in reason


def test_export_refuses_a_bfloat16_model_and_a_foreign_output_folder(tiny_llama, tmp_path: Path):
    import copy

    bf16 = Loaded(copy.deepcopy(tiny_llama.model).to(torch.bfloat16), tiny_llama.tokenizer, tiny_llama.info)
    with pytest.raises(PassError, match="needs a float32 model; its parameters are bfloat16"):
        apply_(bf16, [OnnxExportConfig()])
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PassError, match="exists and is not an unbottle export"):
        apply_(tiny_llama, [OnnxExportConfig(output=str(tmp_path))])


@pytest.mark.slow
def test_smollm2_int8_block_decodes_faster_than_eager_within_1pct_perplexity():
    """Real-model check (``pytest -m slow``): ORT int8-block vs fp32 eager at one thread."""
    from unbottle.benchmarking import BenchConfig, benchmark
    from unbottle.models import load

    base = load("smollm2-135m")
    ort, _ = apply_(base, [OnnxExportConfig(quantize="int8-block")])
    bench = BenchConfig(
        scenarios=("decode",), batch_sizes=(1,), threads=1, new_tokens=64, min_repeats=3, min_time_s=0
    )
    speeds = {}
    for name, loaded in (("eager", base), ("ort", ort), ("eager", base), ("ort", ort)):
        result = benchmark(loaded, bench)
        m = next(m for m in result.measurements if m.name == "decode.tokens_per_s")
        speeds.setdefault(name, []).extend(m.samples)
    ppl = [perplexity(m, eval_tokens=2048).value for m in (base, ort)]
    speedup = math.fsum(speeds["ort"]) / math.fsum(speeds["eager"])
    assert ppl[1] / ppl[0] - 1 <= 0.01, ppl
    assert speedup > 2.0, speeds
