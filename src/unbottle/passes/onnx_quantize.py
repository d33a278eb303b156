"""ONNX Runtime's own quantizers on an exported graph, and a summary of what the graph computes with.

Weight-only block-wise quantization (``MatMulNBits``, 8 or 4 bits, one scale per ``block_size``
weights) keeps activations in float and cuts the bytes each decode step reads; with
``accuracy_level=4`` ONNX Runtime quantizes the activations per block to int8 on the fly and uses
its integer kernels, which is what makes it fast on CPU. Dynamic int8 (``MatMulInteger``,
per-tensor activation scales) is offered too; on Llama-family models activation outliers make it
costly in perplexity.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from pathlib import Path
from typing import Any

from unbottle.passes.base import matches
from unbottle.passes.onnx_export import MODULE_KEY

# ONNX protobufs can't exceed 2 GiB; larger graphs keep their weights in a side file.
_PROTO_LIMIT_BYTES = 1_800_000_000


def weight_matmuls(model: Any) -> dict[str, str]:
    """``{node name: module name}`` of every MatMul of an ``onnx.ModelProto`` with a constant weight."""
    constants = {init.name for init in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in constants:
            props = {p.key: p.value for p in node.metadata_props}
            out[node.name] = props.get(MODULE_KEY, node.name)
    return out


def split_by_exclude(model: Any, exclude: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """(nodes to quantize, nodes excluded), each ``{node name: module name}``."""
    nodes = weight_matmuls(model)
    excluded = {n: m for n, m in nodes.items() if exclude and matches(m, exclude)}
    return {n: m for n, m in nodes.items() if n not in excluded}, excluded


def quantize_blockwise(
    model: Any, bits: int, block_size: int, symmetric: bool, accuracy_level: int, exclude_nodes: list[str]
) -> Any:
    """Replace weight MatMuls by ``MatMulNBits``; return the new ``onnx.ModelProto``."""
    MatMulNBitsQuantizer = _nbits_quantizer()
    with _quiet("onnxruntime.quantization.matmul_nbits_quantizer"):
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=bits,
            block_size=block_size,
            is_symmetric=symmetric,
            accuracy_level=accuracy_level,
            nodes_to_exclude=exclude_nodes,
        )
        quantizer.process()
    return quantizer.model.model


def quantize_dynamic_int8(model: Any, path: Path, exclude_nodes: list[str]) -> None:
    """Dynamic int8 (per-channel weights, per-tensor activations) of the weight MatMuls, saved to ``path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet("onnxruntime.quantization"), _quiet("", logging.ERROR):  # it advises pre-processing on root
        quantize_dynamic(
            model,
            path,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude_nodes,
            use_external_data_format=model.ByteSize() > _PROTO_LIMIT_BYTES,
            extra_options={"MatMulConstBOnly": True},
        )


def save(model: Any, path: Path) -> None:
    """Write an ``onnx.ModelProto``; its weights go to ``<name>.data`` beside it when too big for one file."""
    import onnx

    large = model.ByteSize() > _PROTO_LIMIT_BYTES
    onnx.save_model(model, str(path), save_as_external_data=large, location=f"{path.name}.data")


def op_summary(path: Path) -> dict[str, Any]:
    """What the saved graph computes with: node counts by op, weight bytes by dtype, file bytes.

    Returns:
        ``{"ops": {op: count}, "weight_bytes": {dtype: bytes}, "file_bytes": int, "params": int}``;
        ``params`` counts the float weights still stored as float (quantized ones are in the ops).
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    ops = collections.Counter(
        node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        for node in model.graph.node
    )
    weights: dict[str, int] = collections.Counter()
    for init in model.graph.initializer:
        dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
        n = 1
        for d in init.dims:
            n *= d
        weights[str(dtype)] += n * dtype.itemsize
    files = [path, path.with_name(f"{path.name}.data")]
    return {
        "ops": dict(ops.most_common()),
        "weight_bytes": dict(weights),
        "file_bytes": sum(f.stat().st_size for f in files if f.exists()),
    }


def describe(summary: dict[str, Any]) -> list[str]:
    """Notes for the pass report: file size and stored weights, the matmul-like ops, the node count."""
    ops = summary["ops"]
    heavy = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in ops.items() if "MatMul" in k or k == "Gemm")
    weights = ", ".join(
        f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(summary["weight_bytes"].items()) if v >= 2**16
    )
    return [
        f"graph file {summary['file_bytes'] / 2**20:.1f} MiB; weights: {weights}",
        f"{sum(ops.values())} nodes; matmuls: {heavy}",
    ]


def _nbits_quantizer() -> Any:
    """Import ``MatMulNBitsQuantizer`` without the root-logger ``basicConfig(level=INFO)`` its module runs."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    for handler in root.handlers[len(handlers) :] if root.handlers[: len(handlers)] == handlers else []:
        root.removeHandler(handler)
    root.setLevel(level)
    return MatMulNBitsQuantizer


@contextlib.contextmanager
def _quiet(name: str, level_in_force: int = logging.WARNING):
    """ORT's quantizers log one INFO line per node; keep the console for warnings."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(level_in_force)
    try:
        yield
    finally:
        logger.setLevel(level)
