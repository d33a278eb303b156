"""Every causal-LM family × every pass: it works (checked with numbers) or is refused up front, saying why.

The ten tiny families of ``unbottle.sources.tiny`` stand for the models users run: sliding windows
(Mistral, Gemma 2, Gemma 3 hybrid), softcapping (Gemma 2), q/k norms, fused q/k/v, GPT-2's Conv1D,
OPT's offset positions, tied embeddings. A pass that works must give finite logits of the right
shape, account for every linear layer (touched or skipped with a reason), and stay within an SQNR
floor (quantizers, bf16) or equal the torch logits (ONNX float, compile). A refusal must be a
``PassError`` naming the family and the blocking feature, raised before any pass runs.

``python tests/passes/test_architectures.py`` prints the README's pass × architecture table, built
from ``REFUSED`` and ``ROWS`` below; a test keeps the README's copy equal to it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache
from typer.testing import CliRunner

from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.cli.main import app
from unbottle.core.errors import PassError
from unbottle.evaluation import perplexity
from unbottle.models import load
from unbottle.passes import PassContext, apply_, parse_pass
from unbottle.passes.base import conv1d_layers, linear_layers, model_type
from unbottle.passes.onnx import OnnxExportConfig
from unbottle.sources import Loaded

FAMILIES = (
    "tiny-llama",
    "tiny-mistral",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-gemma2",
    "tiny-gemma3",
    "tiny-phi3",
    "tiny-gpt2",
    "tiny-gpt-neox",
    "tiny-opt",
)
# torch passes as written on the command line → SQNR floor (dB) of their logits; None: lossy by design
# (pruning, low rank), checked by what they remove instead.
TORCH_PASSES = {
    "wo-int8": 25.0,
    "wo-int4:group_size=32": 8.0,
    "dynamic-int8": 17.0,
    "static-int8:calibration_batches=2,calibration_tokens=64": 17.0,
    "precision": 30.0,
    "prune": None,
    "prune:pattern=2:4": None,
    "prune-structured:target=mlp,calibration_batches=1": None,
    "prune-structured:target=heads,amount=0.5,calibration_batches=1": None,
    "prune-structured:target=layers,amount=0.5,calibration_batches=1": None,
    "lowrank:param_budget=0.5": None,
}
ONNX_FLOORS_DB = {"int8-block": 25.0, "int4-block": 8.0, "int8-dynamic": 20.0}
# What each family can't do, with the feature named in the refusal (pass key → family → feature).
_NOT_BUILT = "the GenAI model builder does not build"
REFUSED = {
    "genai": {
        "tiny-mistral": "the GenAI model builder's Mistral graph does not reproduce the sliding window",
        "tiny-gpt2": f"{_NOT_BUILT} GPT2LMHeadModel",
        "tiny-gpt-neox": f"{_NOT_BUILT} GPTNeoXForCausalLM",
        "tiny-opt": f"{_NOT_BUILT} OPTForCausalLM",
    },
    "prune-structured:target=mlp": {
        "tiny-phi3": "a fused gate/up projection (gate_up_proj)",
        "tiny-gpt2": "an ungated MLP (c_fc, c_proj)",
        "tiny-gpt-neox": "an ungated MLP (dense_h_to_4h, dense_4h_to_h)",
        "tiny-opt": "an ungated MLP (fc1, fc2)",
    },
    "prune-structured:target=heads": {
        "tiny-phi3": "a fused q/k/v projection (qkv_proj)",
        "tiny-gpt2": "a fused q/k/v projection (c_attn)",
        "tiny-gpt-neox": "a fused q/k/v projection (query_key_value)",
        "tiny-opt": "an attention output named out_proj, not o_proj",
    },
}
# README rows: label → pass key (the key REFUSED uses)
ROWS = {
    "`wo-int8`": "wo-int8",
    "`wo-int4`": "wo-int4",
    "`dynamic-int8`": "dynamic-int8",
    "`static-int8`": "static-int8",
    "`precision` (bf16)": "precision",
    "`prune` (unstructured, 2:4)": "prune",
    "`prune-structured:target=mlp`": "prune-structured:target=mlp",
    "`prune-structured:target=heads`": "prune-structured:target=heads",
    "`prune-structured:target=layers`": "prune-structured:target=layers",
    "`lowrank`": "lowrank",
    "`compile` (static KV cache)": "compile",
    "`onnx` (float; int8-block, int4-block, int8-dynamic)": "onnx",
    "`genai` (ONNX Runtime GenAI builder)": "genai",
}
needs_onnx = pytest.mark.skipif(
    OnnxExportConfig().missing() != [], reason="needs onnx, onnxruntime, onnxscript"
)
needs_compiler = pytest.mark.skipif(
    parse_pass("compile").missing() != [], reason="inductor needs a C++ compiler"
)
PROBE = torch.randint(4, 260, (2, 24), generator=torch.Generator().manual_seed(0))  # (B, T), T > 2 windows
# Calibration for static-int8 and prune-structured: any tokens do for an architecture check.
CALIBRATION = PassContext(calibration=lambda: [PROBE[:1, :32]])
TEXT = "It was a truth universally acknowledged, that a single man in possession of a good fortune. " * 8


@functools.cache
def tiny(spec: str) -> Loaded:
    """Each family loaded once per session; tests copy it (``apply_``) and never change it."""
    return load(spec)


def pass_key(text: str) -> str:
    """``prune-structured:target=mlp,amount=0.5`` → ``prune-structured:target=mlp``; else the name."""
    name, _, args = text.partition(":")
    target = [a for a in args.split(",") if a.startswith("target=")]
    return f"{name}:{target[0]}" if name == "prune-structured" and target else name


def refusal(family: str, text: str) -> str | None:
    return REFUSED.get(pass_key(text), {}).get(family)


def linear_names(model) -> set[str]:
    """Every layer a weight pass must touch or skip with a reason: nn.Linear and GPT-2's Conv1D."""
    return set(linear_layers(model)) | set(conv1d_layers(model))


def logits(model, ids=PROBE) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()  # (B, T, V)


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum().clamp_min(1e-30)))


def cached_steps(model, ids: torch.Tensor, prefill: int) -> list[torch.Tensor]:
    """Logits of a prefill of ``prefill`` tokens, then one cached step per later token."""
    cache = DynamicCache(config=model.config)  # sliding layers where the config has them
    with torch.inference_mode():
        out = [model(input_ids=ids[:, :prefill], cache=cache, use_cache=True).logits.float()]
        for i in range(prefill, ids.shape[1]):
            out.append(model(input_ids=ids[:, i : i + 1], cache=cache, use_cache=True).logits.float())
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch (and so ONNX Runtime) thread: on a shared 2-core machine more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def any_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matrix is about architectures: a pass this CPU would skip (bf16 sans AVX512_BF16) runs anyway."""
    monkeypatch.setattr("unbottle.passes.apply.unavailable", lambda config: [])


@pytest.mark.parametrize("text", list(TORCH_PASSES))
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_pass_works_or_is_refused_up_front_on_every_family(family, text, any_machine):
    loaded, config = tiny(family), parse_pass(text)
    if packages := [r for r in config.missing() if r.startswith("needs the package")]:
        pytest.skip("; ".join(packages))
    if (feature := refusal(family, text)) is not None:
        with pytest.raises(PassError) as err:
            apply_(loaded, config, CALIBRATION)
        message = str(err.value)
        assert f"can't handle this {model_type(loaded.model)} model" in message and feature in message
        return
    new, [report] = apply_(loaded, config, CALIBRATION)
    got = logits(new.model)
    assert got.shape == (2, 24, 512) and bool(got.isfinite().all()), f"{family} {text}: bad logits"
    if text.startswith("prune-structured"):
        _check_structure(loaded.model, new.model, text)
        return
    if text == "precision":
        assert {p.dtype for p in new.model.parameters()} == {torch.bfloat16}
    else:
        expected = linear_names(loaded.model)
        assert set(report.touched) | set(report.skipped) == expected, "every linear layer touched or skipped"
        assert len(report.touched) >= len(expected) - 1, f"{family} {text}: skipped {report.skipped}"
    if (floor := TORCH_PASSES[text]) is not None:
        db = sqnr_db(logits(loaded.model), got)
        assert db >= floor, f"{family} {text}: logits SQNR {db:.1f} dB < {floor} dB"
    elif text.startswith("prune"):
        zeros = [float((new.model.get_submodule(n).weight == 0).float().mean()) for n in report.touched]
        assert min(zeros) >= 0.49, f"{family} {text}: sparsity {min(zeros):.3f} in some layer"
    else:  # low rank: fewer parameters
        assert report.params_after < report.params_before


def _check_structure(before, after, text: str) -> None:
    """The config shrank as asked, and the cut model's KV cache agrees with its full forward."""
    old, new = before.config, after.config
    if "target=mlp" in text:
        assert new.intermediate_size < old.intermediate_size
    elif "target=heads" in text:
        assert new.num_key_value_heads == old.num_key_value_heads // 2
    else:
        assert new.num_hidden_layers < old.num_hidden_layers
    full = logits(after)
    stepped = torch.cat(cached_steps(after, PROBE, 10), dim=1)
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4, msg="cached decode differs")


# --- ONNX: one float export per family, quantized variants from the cached float graph ---------------


@pytest.fixture(scope="module", params=FAMILIES)
def onnx_family(request, tmp_path_factory):
    """``(family, {quantize: (loaded ORT model, report)})`` for none and the three ORT quantizers."""
    family = request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path_factory.mktemp("onnx-cache")))
        variants = {
            q: apply_(tiny(family), [OnnxExportConfig(quantize=q)]) for q in ("none", *ONNX_FLOORS_DB)
        }
    return family, variants


@needs_onnx
def test_onnx_float_export_equals_torch_for_prefill_and_cached_decode_past_the_window(onnx_family):
    family, variants = onnx_family
    torch_model, (ort, _) = tiny(family).model, variants["none"]
    ref, got = cached_steps(torch_model, PROBE, 10), cached_steps(ort.model, PROBE, 10)
    for step, (r, o) in enumerate(zip(ref, got, strict=True)):
        err = float((r - o).abs().max() / r.abs().max())
        assert err < 1e-3, f"{family}: step {step} (position {9 + step}) relative max error {err:.2e}"
    no_cache = cached_steps(torch_model, PROBE, 24)[0][:, 10:]  # the same positions in one forward
    torch.testing.assert_close(torch.cat(got[1:], dim=1), no_cache, atol=1e-4, rtol=1e-3)


@needs_onnx
def test_onnx_greedy_generation_and_perplexity_equal_torch(onnx_family):
    family, variants = onnx_family
    base, ort = tiny(family), variants["none"][0]
    prompt = PROBE[:, :8]
    kw = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=3)
    with torch.inference_mode():
        ref = base.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kw)
        got = ort.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kw)
    assert torch.equal(got, ref), f"{family}: greedy tokens differ"
    window = dict(text=TEXT, eval_tokens=200, window=64, stride=64, batch_size=2)
    assert perplexity(ort, **window).value == pytest.approx(perplexity(base, **window).value, rel=1e-4)


@needs_onnx
@pytest.mark.parametrize("quantize", list(ONNX_FLOORS_DB))
def test_onnx_quantizers_cover_every_linear_layer_within_an_sqnr_floor(onnx_family, quantize):
    family, variants = onnx_family
    loaded, (report,) = variants[quantize]
    assert set(report.touched) == linear_names(tiny(family).model) and report.skipped == {}
    ops = loaded.model.path.parent.joinpath("export.json").read_text()
    if quantize.endswith("block"):
        assert f'"com.microsoft.MatMulNBits": {len(report.touched)}' in ops, ops
    ref = torch.cat([t.reshape(-1) for t in cached_steps(tiny(family).model, PROBE, 10)])
    got = torch.cat([t.reshape(-1) for t in cached_steps(loaded.model, PROBE, 10)])
    db, floor = sqnr_db(ref, got), ONNX_FLOORS_DB[quantize]
    assert db >= floor, f"{family} onnx:quantize={quantize}: SQNR {db:.1f} dB < {floor} dB"


@needs_onnx
def test_ort_model_refuses_a_sliding_cache_layer_that_already_holds_positions(onnx_family):
    family, variants = onnx_family
    if family != "tiny-gemma3":
        pytest.skip("one hybrid family is enough")
    cache = DynamicCache(config=tiny(family).model.config)
    with torch.inference_mode():
        tiny(family).model(input_ids=PROBE[:, :12], cache=cache, use_cache=True)
    with pytest.raises(
        ValueError, match="DynamicSlidingWindowLayer holding 12 positions.*empty DynamicCache"
    ):
        variants["none"][0].model(input_ids=PROBE[:, 12:13], cache=cache, use_cache=True)


@needs_onnx
def test_onnx_refuses_chunked_attention_layers_before_exporting():
    import copy

    model = copy.deepcopy(tiny("tiny-llama").model)
    model.config.layer_types = ["chunked_attention"] * 2
    with pytest.raises(PassError, match=r"llama model: its layers include \['chunked_attention'\]"):
        apply_(Loaded(model, None, tiny("tiny-llama").info), [OnnxExportConfig()])


@needs_onnx
def test_onnx_refuses_sdpa_tracing_of_gemma2_before_exporting():
    with pytest.raises(PassError, match="no sdpa attention for Gemma2ForCausalLM; use attention=eager"):
        apply_(tiny("tiny-gemma2"), [OnnxExportConfig(attention="sdpa")])


# --- genai: the GenAI model builder's graph and decode loop ---------------------------------------


@pytest.mark.skipif(parse_pass("genai").missing() != [], reason="needs onnxruntime-genai")
@pytest.mark.parametrize("family", FAMILIES)
def test_genai_float_build_equals_torch_past_the_window_or_is_refused(family, tmp_path, monkeypatch):
    monkeypatch.setenv("UNBOTTLE_CACHE", str(tmp_path))
    config = parse_pass("genai:precision=fp32,verify=false")
    if (feature := refusal(family, "genai")) is not None:
        with pytest.raises(PassError, match="can't handle this") as err:
            apply_(tiny(family), config)
        assert feature in str(err.value)
        return
    built, _ = apply_(tiny(family), config)
    ref, got = cached_steps(tiny(family).model, PROBE[:1], 10), cached_steps(built.model, PROBE[:1], 10)
    for step, (r, o) in enumerate(zip(ref, got, strict=True)):
        err = float((r - o).abs().max() / r.abs().max())
        assert err < 1e-3, f"{family}: step {step} (position {9 + step}) relative max error {err:.2e}"


# --- compile: slow (about 30 s per family here), so one hybrid family in the default run ----------


@needs_compiler
@pytest.mark.parametrize(
    "family",
    [f if f == "tiny-gemma3" else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES],
)
def test_compile_decodes_torch_tokens_past_the_window_without_recompiling_per_step(family, any_machine):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # compiled forwards of several models share one code object and its limit
    loaded = tiny(family)
    compiled, _ = apply_(loaded, parse_pass("compile:cache_bucket=32"))
    prompt = PROBE[:1, :6]  # 6 + 14 tokens: one cache size, past the sliding window of 8
    decode_once(compiled.model, prompt, 4, CpuTimer())  # compiles prefill and a decode step
    graphs = counters["stats"]["unique_graphs"]
    eager, fast = [], []
    decode_once(loaded.model, prompt, 14, CpuTimer(), record=eager)
    decode_once(compiled.model, prompt, 14, CpuTimer(), record=fast)
    assert torch.equal(torch.cat(fast, 1), torch.cat(eager, 1)), f"{family}: compiled tokens differ"
    new = counters["stats"]["unique_graphs"] - graphs
    assert new == 0, f"{family}: {new} more graphs for decode steps 5-14 (recompiling per step)"


# --- the command line and the README ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "text", "says"),
    [
        ("tiny-gpt2", "prune-structured:target=heads", "can't handle this gpt2 model: target=heads needs"),
        ("tiny-bert", "genai", "can't handle this bert model: the GenAI model builder does not build"),
    ],
)
def test_apply_cli_refuses_in_one_line_and_writes_nothing(tmp_path, family, text, says):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["apply", family, "--pass", text, "-o", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert not out.exists()


def render_table() -> str:
    """The README's pass × architecture table: ✓ where the matrix above passes, else the refusal."""
    names = [f.removeprefix("tiny-") for f in FAMILIES]
    lines = ["| pass | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    notes: list[str] = []  # refusal reasons, numbered in order of appearance
    for label, key in ROWS.items():
        cells = []
        for family in FAMILIES:
            if (reason := REFUSED.get(key, {}).get(family)) is None:
                cells.append("✓")
                continue
            notes.append(f"`{key}` on {family.removeprefix('tiny-')}: {reason}")
            cells.append(f"refused ({len(notes)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- ({i}) {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


def test_readme_table_is_the_one_the_matrix_establishes():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert render_table() in readme, "regenerate it: python tests/passes/test_architectures.py"


if __name__ == "__main__":
    print(render_table())
