"""Edits of a GenAI builder graph: block-quantized weights, offset terms, fused siblings, pruning.

``passes.genai_gguf`` decides which blocks each node gets; this module writes them into the ONNX
graph: initializers, the per-block offset terms of formats with a minimum, sibling MatMuls fused into
one (one read of the input, one kernel launch), the embedding's block gather, and the final clean-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unbottle.sources import gguf_blocks as gb
from unbottle.sources.gguf_rows import concat_rows


class GraphEditor:
    """Edits of one ONNX graph: new initializers, extra nodes, and pruning of what nothing reads."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.graph = proto.graph
        self.blocksums: dict[tuple[str, int, int], str] = {}  # (input, K, block) → its block sums
        self.tied: tuple[str, str] | None = None  # the output layer's (B, scales) when it is token_embd

    def add(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def set_matmul(self, node: Any, weight: gb.NBitsWeight, accuracy_level: int, tied: bool = False) -> None:
        from onnx import helper

        base = node.name.strip("/").replace("/", ".")
        if tied and weight.offsets is None and weight.zero_points is None:
            self.tied = (f"{base}.gguf_B", f"{base}.gguf_scales")
        inputs = [
            node.input[0],
            self.add(f"{base}.gguf_B", weight.b),
            self.add(f"{base}.gguf_scales", weight.scales),
        ]
        if weight.zero_points is not None:
            inputs.append(self.add(f"{base}.gguf_zero_points", weight.zero_points))
        del node.input[:]
        node.input.extend(inputs)
        del node.attribute[:]
        node.attribute.extend(
            helper.make_attribute(k, v) for k, v in weight.attributes(accuracy_level).items()
        )
        if weight.offsets is not None:
            self._add_offsets(node, base, weight)

    def fuse(self, nodes: list[Any], parts: list[gb.NBitsWeight]) -> tuple[Any, gb.NBitsWeight]:
        """``nodes`` (MatMulNBits of one input) as one node over their rows, then a Split back into
        their outputs; returns the fused node (weights not yet set) and its weight."""
        from onnx import helper

        first, outputs = nodes[0], [n.output[0] for n in nodes]
        first.name = f"{first.name}/fused"
        first.output[0] = f"{outputs[0]}/fused"
        for node in nodes[1:]:
            self.graph.node.remove(node)
        base = first.name.strip("/").replace("/", ".")
        sizes = self.add(f"{base}.split", np.array([p.n for p in parts], np.int64))
        self.graph.node.append(
            helper.make_node("Split", [first.output[0], sizes], outputs, axis=-1, name=f"{first.name}/split")
        )
        return first, concat_rows(parts)

    def _add_offsets(self, node: Any, base: str, weight: gb.NBitsWeight) -> None:
        """``y = MatMulNBits(x) + blocksum(x) @ offsets.T``, the MatMulNBits output renamed."""
        from onnx import helper

        sums = self._blocksum(node.input[0], weight.k, weight.block_size)
        out = node.output[0]
        node.output[0] = f"{out}/nbits"
        table = self.add(f"{base}.gguf_offsets", np.ascontiguousarray(weight.offsets.T))  # (K/block, N)
        self.graph.node.extend(
            [
                helper.make_node("MatMul", [sums, table], [f"{out}/offset"], name=f"{node.name}/offset"),
                helper.make_node("Add", [node.output[0], f"{out}/offset"], [out], name=f"{node.name}/add"),
            ]
        )

    def _blocksum(self, x: str, k: int, block: int) -> str:
        from onnx import helper

        key = (x, k, block)
        if key not in self.blocksums:
            name = f"{x}/blocksum{block}"
            shape = self.add(f"{name}/shape", np.array([0, 0, k // block, block], np.int64))
            axes = self.add(f"{name}/axes", np.array([-1], np.int64))
            self.graph.node.extend(
                [
                    helper.make_node("Reshape", [x, shape], [f"{name}/blocks"], name=f"{name}/reshape"),
                    helper.make_node("ReduceSum", [f"{name}/blocks", axes], [name], keepdims=0, name=name),
                ]
            )
            self.blocksums[key] = name
        return self.blocksums[key]

    def set_embedding(self, weight: gb.NBitsWeight | None, table: np.ndarray) -> str:
        """Point the embedding at the file's token_embd blocks (or ``table``, exact float32); says which."""
        from onnx import helper

        gathers = [
            n
            for n in self.graph.node
            if n.op_type in ("GatherBlockQuantized", "Gather") and "input_ids" in n.input
        ]
        if len(gathers) != 1:
            raise ValueError(
                f"the GenAI graph has {len(gathers)} gathers of input_ids; expected one embedding"
            )
        node = gathers[0]
        out = node.output[0]
        if weight is None:
            new = [
                helper.make_node(
                    "Gather", [self.add("model.embed_tokens.gguf_table", table), "input_ids"], [out]
                )
            ]
            said = "token_embd as an exact float32 table (its GGUF type has no block gather here)"
        else:
            new = self._block_gather(weight, out)
            said = f"{weight.qtype} blocks of token_embd (GatherBlockQuantized, {weight.bits} bits)"
        self.graph.node.remove(node)
        self.graph.node.extend(new)  # placed by the topological sort in prune()
        return said

    def _block_gather(self, weight: gb.NBitsWeight, out: str) -> list[Any]:
        """GatherBlockQuantized of the codes, plus the gathered per-block offsets of formats with them."""
        from onnx import helper

        name = "model.embed_tokens.gguf"
        nodes = []
        if self.tied is not None and weight.offsets is None and weight.zero_points is None:
            # the output layer holds the same blocks: gather from them (as the builder ties its own)
            shape = self.add(f"{name}_rows", np.array([weight.n, -1], np.int64))
            nodes.append(helper.make_node("Reshape", [self.tied[0], shape], [f"{name}_data"]))
            inputs = [f"{name}_data", "input_ids", self.tied[1]]
        else:
            inputs = [self.add(f"{name}_data", weight.b.reshape(weight.n, -1)), "input_ids"]
            inputs.append(self.add(f"{name}_scales", weight.scales))
        if weight.zero_points is not None:
            inputs.append(self.add(f"{name}_zero_points", weight.zero_points))
        attrs = {"bits": weight.bits, "block_size": weight.block_size, "gather_axis": 0, "quantize_axis": 1}
        rows = out if weight.offsets is None else f"{out}/codes"
        nodes += [
            helper.make_node(
                "GatherBlockQuantized",
                inputs,
                [rows],
                name="/model/embed_tokens/gguf_gather",
                domain="com.microsoft",
                **attrs,
            )
        ]
        if weight.offsets is not None:  # rows (B, S, D) + offsets[ids] repeated over each block
            groups, block = weight.scales.shape[1], weight.block_size
            split = self.add(f"{name}_split", np.array([0, 0, groups, block], np.int64))
            joined = self.add(f"{name}_joined", np.array([0, 0, groups * block], np.int64))
            last = self.add(f"{name}_last", np.array([-1], np.int64))
            nodes += [
                helper.make_node(
                    "Gather", [self.add(f"{name}_offsets", weight.offsets), "input_ids"], [f"{out}/off"]
                ),
                helper.make_node("Unsqueeze", [f"{out}/off", last], [f"{out}/off1"]),
                helper.make_node("Reshape", [rows, split], [f"{out}/blocks"]),
                helper.make_node("Add", [f"{out}/blocks", f"{out}/off1"], [f"{out}/sum"]),
                helper.make_node("Reshape", [f"{out}/sum", joined], [out]),
            ]
        return nodes

    def prune(self) -> None:
        """Drop nodes whose outputs nothing reads and initializers no node reads; re-sort the nodes."""
        graph = self.graph
        outputs = {o.name for o in graph.output}
        while True:
            read = {i for n in graph.node for i in n.input} | outputs
            dead = [n for n in graph.node if not any(o in read for o in n.output)]
            if not dead:
                break
            for n in dead:
                graph.node.remove(n)
        read = {i for n in graph.node for i in n.input}
        keep = [t for t in graph.initializer if t.name in read]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        topological_sort(graph)


def topological_sort(graph: Any) -> None:
    """ONNX needs producers before consumers; the added offset nodes were appended at the end."""
    from onnx import NodeProto

    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = [NodeProto.FromString(n.SerializeToString()) for n in graph.node], []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("the rewritten graph has a cycle or a missing input; this is a bug in unbottle")
        for n in ready:
            available.update(n.output)
        ordered += ready
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)


def save(proto: Any, graph_path: Path) -> None:
    """Write graph and weights as the builder does (model.onnx + model.onnx.data).

    Every tensor is in memory (loaded with its external data), so the old data file can go first;
    onnx appends to an existing one.
    """
    import onnx

    data = graph_path.with_name(graph_path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(proto, str(graph_path), save_as_external_data=True, location=data.name, size_threshold=1024)


def sibling_groups(nodes: list[Any], weights: dict[str, gb.NBitsWeight]) -> list[list[Any]]:
    """MatMulNBits nodes that read the same input with weights of one layout (bits, block, zero-point
    kind, offsets or not), in groups of two or more: fusing them widens nothing."""

    def layout(w: gb.NBitsWeight) -> tuple[Any, ...]:
        zp = None if w.zero_points is None else w.zero_points.dtype.str
        return (w.k, w.bits, w.block_size, zp, w.offsets is None)

    groups: dict[tuple[Any, ...], list[Any]] = {}
    for node in nodes:
        groups.setdefault((node.input[0], *layout(weights[node.name])), []).append(node)
    return [g for g in groups.values() if len(g) > 1]
