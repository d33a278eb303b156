"""``unbottle profile`` on models run as one ONNX graph: ORT's own profile, and the engine's ceiling.

torch's profiler sees such a model as one opaque call; these tests check that the breakdown comes
from ONNX Runtime instead (operator types, module groups from node names, the executor's time inside
the graph, the loop outside it), that the weights-only graph really computes what the weight nodes
compute, and that a GenAI build (whose cache holds only the window's positions) profiles at all.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.passes import apply_
from unbottle.passes.onnx import OnnxExportConfig
from unbottle.profiling.graph_ceiling import measure_ceiling, weights_only_graph
from unbottle.profiling.graph_profile import WEIGHT_OPS, group_of_node, read_bytes, summarise_events

pytestmark = pytest.mark.skipif(
    OnnxExportConfig().missing() != [], reason="needs onnx, onnxruntime and onnxscript"
)
runner = CliRunner()


@pytest.fixture(scope="module")
def ort_tiny(tiny_llama, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path_factory.mktemp("onnx-cache")))
        return apply_(tiny_llama, [OnnxExportConfig()])[0]


def _weight_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    inits = {i.name for i in proto.graph.initializer if len(i.dims) >= 2}
    return [
        n
        for n in proto.graph.node
        if n.op_type in WEIGHT_OPS and (n.op_type == "MatMulNBits" or (n.input[1:2] and n.input[1] in inits))
    ]


def test_the_weights_only_graph_holds_every_weight_node_and_computes_what_it_does(ort_tiny):
    path = ort_tiny.model.path
    full = onnx.load(str(path))
    proto, shapes, _ = weights_only_graph(path)
    assert len(proto.graph.node) == len(_weight_nodes(full)) > 0
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {n: np.random.default_rng(1).standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    matmuls = [n for n in proto.graph.node if n.op_type == "MatMul"]
    assert matmuls, "the fp32 export's projections are MatMuls on weight initializers"
    for node in matmuls:
        want = feed[node.input[0]] @ inits[node.input[1]]
        np.testing.assert_allclose(outputs[node.output[0]], want, rtol=1e-4, atol=1e-5)


def test_the_ceiling_times_both_sides_and_counts_the_bytes_a_step_reads(ort_tiny):
    got = measure_ceiling(ort_tiny.model, context=8, threads=1)
    assert got["step_s"] > 0 and got["weights_s"] > 0
    assert got["weight_bytes"] == read_bytes(ort_tiny.model.path) > 0
    assert got["weight_nodes"] == len(_weight_nodes(onnx.load(str(ort_tiny.model.path))))
    assert got["tokens_per_s_ceiling"] == pytest.approx(1 / got["weights_s"])


def test_node_names_give_the_module_groups():
    assert group_of_node("/model/layers.0/attn/qkv_proj/MatMul", "MatMulNBits") == "attention"
    assert group_of_node("/model/layers.3/mlp/down_proj/MatMul/offset", "MatMul") == "mlp"
    assert group_of_node("/lm_head/MatMul", "MatMulNBits") == "lm_head"
    assert group_of_node("/model/layers.1/post_attention_layernorm/SkipLayerNorm", "X") == "norms"
    assert group_of_node("/model/embed_tokens/Gather", "Gather") == "embedding"
    assert group_of_node("node_17", "GroupQueryAttention") == "attention"
    assert group_of_node("node_18", "Add") == "other ops"


def _run(ts: int, dur: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def _node(name: str, op: str, ts: int, dur: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_events_of_the_measured_runs_add_up_to_the_wall_time():
    events = [
        _run(0, 1000),  # warm-up: left out
        _node("/model/layers.0/mlp/up/MatMul", "MatMul", 10, 900),
        _run(2000, 100),
        _node("/model/layers.0/mlp/up/MatMul", "MatMul", 2010, 60),
        _node("/model/layers.0/attn/GQA", "GroupQueryAttention", 2070, 20),
        {"cat": "Node", "name": "/x_fence_before", "ts": 2080, "dur": 5},  # not a kernel
    ]
    prof = summarise_events("decode", 150e-6, 160e-6, events, 1, None)
    assert prof.groups["mlp"] == pytest.approx(60e-6) and prof.groups["attention"] == pytest.approx(20e-6)
    assert prof.groups["graph overhead"] == pytest.approx(20e-6)  # the run's 100 us less its kernels
    assert prof.groups["other"] == pytest.approx(50e-6)  # outside the graph
    assert sum(prof.groups.values()) == pytest.approx(prof.wall_s)
    assert prof.kernel_s == pytest.approx(80e-6)
    assert [r["op"] for r in prof.ops] == ["MatMul", "GroupQueryAttention"]
    # profiled runs slower than the unprofiled wall: the graph parts shrink to it, nothing outside
    slow = summarise_events("decode", 50e-6, 160e-6, events, 1, None)
    assert slow.groups["other"] == 0 and sum(slow.groups.values()) == pytest.approx(50e-6)
    # no graph run in the window (a hybrid's torch prompt): all of it is outside the graph
    none = summarise_events("prefill", 150e-6, 160e-6, events, 0, None)
    assert none.kernel_s == 0 and none.groups["other"] == pytest.approx(150e-6)


def _profile(model_dir: str) -> dict:
    result = runner.invoke(
        app,
        ["profile", model_dir, "--threads", "1", "--prompt-length", "8", "--decode-tokens", "4", "--json"],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])["profile"]


def test_profiling_a_saved_onnx_model_reads_onnx_runtimes_own_profile(tmp_path):
    out = tmp_path / "tiny-ort"
    made = runner.invoke(app, ["apply", "tiny-llama", "--pass", "onnx", "-o", str(out), "--quiet"])
    assert made.exit_code == 0, made.output
    doc = _profile(str(out))
    for phase in ("prefill", "decode"):
        data = doc["phases"][phase]
        assert sum(data["groups"].values()) == pytest.approx(data["wall_s"], rel=1e-6)
        assert "graph overhead" in data["groups"] and "mlp" in data["groups"]
        assert "MatMul" in {op["op"] for op in data["ops"]}  # ORT's operator types, not aten::
        assert 0 < data["kernel_s"] <= data["wall_s"]
        assert doc["roofline"][phase]["engine"] == "onnxruntime"
    engine = doc["engine_ceiling"]
    assert engine["weights_s"] > 0 and engine["weight_nodes"] > 0
    findings = doc["diagnosis"]["findings"]
    assert any("this engine's weight kernels alone take" in f["text"] for f in findings)
    for f in findings:  # a graph model is never told to compile or export itself
        assert not {"compile", "onnx"} & {r["candidate"] for r in f["recommendations"]}, f


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None, reason="needs onnxruntime-genai")
def test_a_genai_build_profiles_although_its_cache_holds_only_the_window(tmp_path):
    out = tmp_path / "tiny-genai"
    made = runner.invoke(
        app, ["apply", "tiny-llama", "--pass", "genai:precision=int4", "-o", str(out), "--quiet"]
    )
    assert made.exit_code == 0, made.output
    doc = _profile(str(out))
    assert "MatMulNBits" in {op["op"] for op in doc["phases"]["decode"]["ops"]}
    assert doc["engine_ceiling"]["weight_nodes"] >= 1


def test_the_int4_format_is_not_recommended_to_a_model_already_that_small():
    from unbottle.profiling.diagnose import _recommend
    from unbottle.profiling.peaks import Peaks

    peaks = Peaks(threads=1, bandwidth_gbps=10.0, matmul_gflops={"float32": 100.0})
    row = {"bound": "memory-bound", "tokens_per_s": 50.0, "bytes_per_param": 0.9}
    ceilings = {"float32": 10.0, "bfloat16": 20.0, "int8": 40.0, "int4": 70.0}
    assert _recommend("decode", row, peaks, ceilings) == []
    row["bytes_per_param"] = 4.0
    assert {r["candidate"] for r in _recommend("decode", row, peaks, ceilings)} >= {"genai:weights=gguf"}
