"""The decode ceiling an ONNX graph's own kernels set on this host, against the whole graph step.

The graph's weight-reading nodes (every node in ``WEIGHT_OPS`` with an initializer of two or more
dimensions among its inputs: ``MatMulNBits``, a ``MatMul`` or ``Gemm`` on a weight, ...) are copied
with their real initializers into a graph of their own, each fed a fresh one-token input of the width
it reads. One batch-1 decode step of the whole graph (a past of ``context`` positions) and one run of
that weights-only graph alternate over rounds; their medians say how long this engine's kernels take
to stream the weights once (a ceiling no graph around them can beat), the bandwidth that implies,
and how much the rest of the graph adds per token.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from unbottle.profiling.graph_profile import WEIGHT_OPS, proto_read_bytes
from unbottle.runtime.ort_model import session_options

CEILING_ROUNDS = 7
CEILING_CALLS = 5  # calls per side per round
# ORT's intra-op workers spin after a run; with two sessions alternating on as many cores as threads, one
# session's spinning workers take the cores from the other's, and two threads measure no faster than one
SETTLE_S = 0.05


def weights_only_graph(path: str | Path) -> tuple[Any, dict[str, tuple[int, ...]], float]:
    """The weight-reading nodes of the graph at ``path`` as a model of their own, its inputs' shapes,
    and the bytes a step of the whole graph reads (``graph_profile.read_bytes``).

    Raises:
        ValueError: the graph has no weight-reading node.
    """
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    nodes, inputs, used = [], {}, set()
    for node in proto.graph.node:
        width = _read_width(node, inits)
        if width is None:
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        shape = (1, width) if WEIGHT_OPS[node.op_type] == 2 else (1, 1, width)
        for j, name in enumerate(copy.input):
            if name in inits:
                used.add(name)
            elif name:
                copy.input[j] = f"x{'x'.join(map(str, shape))}"
                inputs[copy.input[j]] = shape
        nodes.append(copy)
    if not nodes:
        raise ValueError(f"{path} has no node that reads a weight initializer ({', '.join(WEIGHT_OPS)})")
    graph = helper.make_graph(
        nodes,
        "weights-only",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for n in nodes for o in n.output[:1]],
        [inits[u] for u in sorted(used)],
    )
    model = helper.make_model(graph, opset_imports=proto.opset_import)
    model.ir_version = proto.ir_version
    return model, inputs, proto_read_bytes(proto)


def _read_width(node: Any, inits: dict[str, Any]) -> int | None:
    """The activation width K a weight-reading node takes, or None when it reads no weight matrix."""
    if node.op_type not in WEIGHT_OPS:
        return None
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "MatMulNBits":
        return int(attrs["K"].i)
    weights = [inits[n] for n in node.input[1:2] if n in inits and len(inits[n].dims) >= 2]
    if not weights or node.input[0] in inits:
        return None
    dims = list(weights[0].dims)
    trans_b = "transB" in attrs and attrs["transB"].i == 1
    return int(dims[-1] if trans_b else dims[-2])


def step_feed(session: Any, context: int, kv_shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Inputs of one batch-1 decode step after ``context`` positions (a zero past of ``kv_shape``:
    key/value heads, head size)."""
    feed = {}
    for i in session.get_inputs():
        dtype = np.int32 if i.type == "tensor(int32)" else np.int64
        if i.name == "input_ids":
            feed[i.name] = np.array([[1]], dtype)
        elif i.name == "attention_mask":
            feed[i.name] = np.ones((1, context + 1), dtype)
        elif i.name == "position_ids":
            feed[i.name] = np.array([[context]], dtype)
        elif i.name == "logits_index":
            feed[i.name] = np.array([0], np.int64)
        elif i.type == "tensor(float)" and len(i.shape) == 4:  # past keys / values (B, heads, P, dim)
            feed[i.name] = np.zeros((1, kv_shape[0], context, kv_shape[1]), np.float32)
        else:
            raise ValueError(f"can't feed the graph input {i.name!r} ({i.type}, {i.shape}) of a decode step")
    return feed


def measure_ceiling(model: Any, context: int, threads: int) -> dict[str, Any]:
    """The whole graph's decode step against its weight-reading nodes alone, alternating, at ``threads``.

    Returns:
        ``step_s`` and ``weights_s`` (medians per call), ``weight_nodes``, ``weight_bytes`` (what a
        step reads, gathered tables excluded), ``weights_gbps`` (those bytes over ``weights_s``) and
        ``tokens_per_s_ceiling`` (1 / ``weights_s``).
    """
    import onnxruntime as ort

    model.session()  # describes the graph's inputs (the past's static dims)
    options = session_options(threads, model.optimization)
    full = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    proto, shapes, nbytes = weights_only_graph(model.path)
    alone = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    sides = {
        "step_s": (full, step_feed(full, context, model._kv_shape)),
        "weights_s": (alone, {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(CEILING_ROUNDS + 1):  # the first round warms both up and is dropped
        for key, (session, feed) in sides.items():
            time.sleep(SETTLE_S)  # the other session's spinning workers would hold the cores
            start = time.perf_counter()
            for _ in range(CEILING_CALLS):
                session.run(None, feed)
            times[key].append((time.perf_counter() - start) / CEILING_CALLS)
    out = {k: statistics.median(v[1:]) for k, v in times.items()}
    return {
        **out,
        "context": context,
        "weight_nodes": len(proto.graph.node),
        "weight_bytes": nbytes,
        "weights_gbps": nbytes / out["weights_s"] / 1e9,
        "tokens_per_s_ceiling": 1 / out["weights_s"],
    }
