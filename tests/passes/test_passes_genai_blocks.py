"""genai:weights=blocks — llama.cpp block formats computed from float weights, searched under
activation importance, carried into MatMulNBits exactly as a GGUF file's own blocks are.

tiny-llama's weights are random floats (on no grid), so this is the case ONNX Runtime's own
round-to-nearest quantizer faces on a float model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unbottle.passes import apply_, block_quant
from unbottle.passes.genai import GenaiConfig
from unbottle.sources import gguf_blocks as gb

needs_genai = pytest.mark.skipif(
    GenaiConfig().missing() != [], reason="needs onnxruntime-genai and onnxruntime"
)


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / ((ref - got) ** 2).sum()))


def test_q4_1_bytes_decode_like_llama_cpps_reference_and_the_search_beats_min_max():
    import gguf

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((48, 256)) * 0.05 + 0.01).astype(np.float32)
    importance = rng.gamma(0.5, 1.0, 256)
    raw = block_quant._searched_q4_1(w, importance)
    searched = block_quant.quantize(w, "q4_1", importance)
    reference = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
    assert np.array_equal(gb.dequantize(searched), reference)  # the bytes are valid Q4_1 blocks
    min_max = block_quant.quantize(w, "q4_1")

    def weighted(q):
        return float((importance * (gb.dequantize(q) - w) ** 2).sum())

    assert weighted(searched) < 0.9 * weighted(min_max)
    for fmt in block_quant.FORMATS:  # every format round-trips its own reference quantizer
        qtype = gguf.GGMLQuantizationType[fmt.upper()]
        ref = gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype)
        assert np.array_equal(gb.dequantize(block_quant.quantize(w, fmt)), ref), fmt


def test_a_bad_format_or_shape_is_refused_with_what_is_allowed():
    with pytest.raises(ValueError, match="block format 'q3' given; allowed: q4_0, q4_1, q5_1, q8_0"):
        block_quant.quantize(np.zeros((4, 64), np.float32), "q3")
    with pytest.raises(ValueError, match="no whole blocks of 32"):
        block_quant.quantize(np.zeros((4, 40), np.float32), "q4_1")
    with pytest.raises(Exception, match="block_format='int4' given; allowed: q4_0"):
        GenaiConfig(weights="blocks", block_format="int4")
    with pytest.raises(Exception, match="kept at 8 bits only with weights=blocks"):
        GenaiConfig(weights="quantize", exclude=("lm_head",))


def test_the_calibration_text_is_not_the_evaluation_text(tiny_llama):
    from unbottle.evaluation.corpus import CORPUS

    assert block_quant.CALIBRATION_TEXT != CORPUS
    imp = block_quant.activation_importance(tiny_llama.model, tiny_llama.tokenizer, tokens=256, window=128)
    assert "lm_head" in imp and "model.layers.0.self_attn.q_proj" in imp
    assert all(v.shape == (tiny_llama.model.config.hidden_size,) or v.ndim == 1 for v in imp.values())
    assert all(np.isfinite(v).all() and (v >= 0).all() for v in imp.values())


@needs_genai
def test_blocks_build_is_closer_to_the_float_model_than_the_builders_rtn(tiny_llama, tmp_path, monkeypatch):
    """Same 4 bits per MatMul weight, output layer at 8 bits in both: the searched Q4_1 blocks keep
    the logits closer to the float model's than the builder's round-to-nearest int4."""
    monkeypatch.setenv("UNBOTTLE_CACHE", str(tmp_path))
    ids = torch.randint(4, 500, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = tiny_llama.model(input_ids=ids).logits.numpy()
    built = {}
    for key, cfg in {
        "blocks": GenaiConfig(weights="blocks", accuracy_level=1),
        "rtn": GenaiConfig(precision="int4", mixed=("last_matmul:int8",), accuracy_level=1),
    }.items():
        new, [report] = apply_(tiny_llama, [cfg])
        with torch.inference_mode():
            built[key] = new.model(input_ids=ids).logits.numpy()
        if key == "blocks":
            notes = " ".join(report.notes)
            assert "llama.cpp block formats" in notes and "Q4_1" in notes and "Q8_0" in notes, notes
            assert "pride_and_prejudice" in notes, notes
    assert _sqnr_db(ref, built["blocks"]) > _sqnr_db(ref, built["rtn"]) + 1.0


@needs_genai
def test_excluded_layers_are_built_at_8_bits(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("UNBOTTLE_CACHE", str(tmp_path))
    cfg = GenaiConfig(
        weights="blocks", calibrate=False, exclude=("model.layers.0.self_attn.q_proj", "down_proj")
    )
    new, [report] = apply_(tiny_llama, [cfg])
    notes = " ".join(report.notes)
    assert "min-max per block" in notes, notes
    n_layers = tiny_llama.model.config.num_hidden_layers
    # layer 0's fused q/k/v mixes Q8_0 and Q4_1 rows; every down_proj is Q8_0; each gate and up (both
    # Q4_1, one input) run as one node
    matmuls = notes.split("MatMuls ", 1)[1].split(";", 1)[0]  # "1 Q8_0+Q4_1, 5 Q4_1, 3 Q8_0"
    counts = {fmt: int(n) for n, fmt in (part.split(" ") for part in matmuls.split(", "))}
    assert counts == {"Q8_0+Q4_1": 1, "Q4_1": 3 * n_layers - 1, "Q8_0": n_layers + 1}  # + the output layer
    assert f"{n_layers} sibling MatMuls fused" in notes


def test_sensitivity_of_a_blocks_candidate_is_simulated_per_layer(tiny_llama):
    from unbottle.optimizer.sensitivity import layer_sensitivity

    scores, how = layer_sensitivity(tiny_llama, [GenaiConfig(weights="blocks")])
    assert how == "simulated q4_1 blocks"
    assert "lm_head" not in scores  # already at q8_0 (output_format): nothing to fall back to
    assert len(scores) == 7 * tiny_llama.model.config.num_hidden_layers
    with_4bit_output, _ = layer_sensitivity(tiny_llama, [GenaiConfig(weights="blocks", output_format="q4_1")])
    assert "lm_head" in with_4bit_output
    assert all(0 <= v < 1 for v in scores.values())
