"""genai:weights=gguf — a GenAI build whose weights are the GGUF file's own blocks, exactly.

tiny-llama is written as a GGUF whose layers mix every block format the import carries (a fused
q/k/v of Q4_0 + Q5_1 + Q8_0 rows, offsets and all), loaded back through unbottle (transformers
dequantizes it: that float model is the baseline), then built. The graph's dequantized weights must
equal the baseline's bit for bit, and at accuracy_level 1 its logits and perplexity equal the
baseline's to float32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from gguf_files import write_llama_gguf
from unbottle.core.errors import PassError
from unbottle.evaluation import perplexity
from unbottle.models import load
from unbottle.passes import apply_, parse_pass
from unbottle.passes.genai import GenaiConfig
from unbottle.sources import gguf_blocks as gb

pytestmark = pytest.mark.skipif(
    GenaiConfig().missing() != [], reason="needs onnxruntime-genai and onnxruntime"
)
MIXED = {  # GGUF name fragment → block type
    "attn_q": "Q4_0",
    "attn_k": "Q5_1",
    "attn_v": "Q8_0",
    "attn_output": "Q4_1",
    "ffn_gate": "Q4_1",
    "ffn_up": "Q5_0",
    "ffn_down": "Q4_1",
    "token_embd": "Q4_1",  # a minimum: the gather adds its offsets
    "output": "Q8_0",
}
TEXT = "It was a truth universally acknowledged, that a single man in possession of a good fortune. " * 8


@pytest.fixture(scope="module")
def from_gguf(tiny_llama, tmp_path_factory) -> tuple[Path, object]:
    path = write_llama_gguf(tiny_llama.model, tmp_path_factory.mktemp("gguf") / "mixed.gguf", types=MIXED)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path_factory.mktemp("cache")))
        return path, load(str(path))


@pytest.fixture(scope="module")
def exact(from_gguf, tmp_path_factory):
    """Built at accuracy_level 1 (float32 activations), so its logits can equal the baseline's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path_factory.mktemp("genai-cache")))
        new, [report] = apply_(from_gguf[1], [GenaiConfig(weights="gguf", accuracy_level=1)])
    return new, report


def _graph_weights(folder: Path) -> dict[str, np.ndarray]:
    """Each MatMulNBits node's weight (N, K) as the graph computes it, offsets included."""
    proto = onnx.load(str(folder / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    offsets = {
        n.output[0].removesuffix("/offset"): inits[n.input[1]]
        for n in proto.graph.node
        if n.name.endswith("/offset")
    }
    out = {}
    for node in (n for n in proto.graph.node if n.op_type == "MatMulNBits"):
        attrs = {a.name: a.i for a in node.attribute}
        zp = inits[node.input[3]] if len(node.input) > 3 and node.input[3] else None
        off = offsets.get(node.output[0].removesuffix("/nbits"))
        weight = gb.NBitsWeight(
            "?",
            attrs["bits"],
            attrs["block_size"],
            inits[node.input[1]],
            inits[node.input[2]],
            zp,
            None if off is None else off.T,
        )
        out[node.name] = gb.dequantize(weight)
    return out


def test_every_matmul_of_the_graph_equals_the_gguf_dequantization_bit_for_bit(from_gguf, exact):
    model = from_gguf[1].model
    got = _graph_weights(exact[0].model.folder)
    layer = model.model.layers[0]
    qkv = torch.cat(
        [layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight]
    )
    expect = {
        "/model/layers.0/attn/qkv_proj/MatMul_Q4": qkv,
        "/model/layers.0/attn/o_proj/MatMul_Q4": layer.self_attn.o_proj.weight,
        "/model/layers.0/mlp/up_proj/MatMul_Q4": layer.mlp.up_proj.weight,
        "/model/layers.0/mlp/down_proj/MatMul_Q4": layer.mlp.down_proj.weight,
        "/lm_head/MatMul_Q4": model.lm_head.weight,
    }
    assert len(got) == 1 + 5 * model.config.num_hidden_layers
    for name, want in expect.items():
        assert np.array_equal(got[name], want.detach().numpy()), f"{name} differs from the GGUF's weights"
    notes = " ".join(exact[1].notes)
    assert "Q4_0+Q5_1+Q8_0" in notes and "Q4_1 blocks of token_embd" in notes, notes


def test_exact_build_gives_the_baseline_logits_and_perplexity(from_gguf, exact):
    base, built = from_gguf[1], exact[0]
    ids = torch.randint(4, 500, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref, got = base.model(input_ids=ids).logits, built.model(input_ids=ids).logits
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    window = dict(text=TEXT, eval_tokens=200, window=64, stride=64, batch_size=1)
    assert perplexity(built, **window).value == pytest.approx(perplexity(base, **window).value, rel=1e-5)


def test_siblings_in_one_format_run_as_one_matmul_with_the_same_logits(tiny_llama, tmp_path, monkeypatch):
    """All Q4_1, as the packaged model: gate and up read one input, so they become one MatMulNBits (their
    rows, offsets and all) and a Split; the logits still equal the float model's."""
    monkeypatch.setenv("UNBOTTLE_CACHE", str(tmp_path / "cache"))
    layer_types = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    types = {p: "Q4_1" for p in layer_types} | {"output": "Q8_0", "token_embd": "Q8_0"}
    base = load(str(write_llama_gguf(tiny_llama.model, tmp_path / "q41.gguf", types=types)))
    new, [report] = apply_(base, [GenaiConfig(weights="gguf", accuracy_level=1)])
    layers = base.model.config.num_hidden_layers
    assert f"{layers} sibling MatMuls fused" in " ".join(report.notes)
    mlp = base.model.model.layers[0].mlp
    got = _graph_weights(new.model.folder)
    fused = got["/model/layers.0/mlp/gate_proj/MatMul_Q4/fused"]
    assert np.array_equal(fused, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach().numpy())
    assert len(got) == 1 + 4 * layers
    proto = onnx.load(str(new.model.folder / "model.onnx"), load_external_data=False)
    assert sum(n.op_type == "Split" for n in proto.graph.node) == layers
    ids = torch.randint(4, 500, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, out = base.model(input_ids=ids).logits, new.model(input_ids=ids).logits
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_fast_build_quantizes_activations_only(from_gguf, tmp_path, monkeypatch):
    """accuracy_level 4 (the default) multiplies int8 activations by the same blocks: close, not equal."""
    monkeypatch.setenv("UNBOTTLE_CACHE", str(tmp_path))
    new, [report] = apply_(from_gguf[1], [GenaiConfig(weights="gguf")])
    assert "SQNR" in report.notes[-1]
    sqnr = float(report.notes[-1].rsplit("SQNR ", 1)[1].split(" dB")[0])
    assert sqnr > 20, report.notes[-1]


def test_weights_gguf_refuses_a_model_not_loaded_from_a_gguf_file(tiny_llama):
    with pytest.raises(PassError, match=r"weights=gguf takes the blocks of the \.gguf file.*came from"):
        apply_(tiny_llama, [GenaiConfig(weights="gguf")])


def test_weights_gguf_refuses_weights_an_earlier_pass_changed(from_gguf):
    with pytest.raises(PassError, match="differ from the model's.*earlier pass"):
        apply_(from_gguf[1], [parse_pass("prune:sparsity=0.5"), GenaiConfig(weights="gguf")])


def test_weights_must_be_quantize_gguf_or_blocks():
    with pytest.raises(Exception, match="genai weights=.q4. given; allowed: quantize, gguf, blocks"):
        GenaiConfig(weights="q4")
