"""A GenAI build whose weights are the GGUF file's own quantized blocks, not a re-quantization.

The model builder quantizes float weights itself (round-to-nearest or k-quant), which moves every
weight of a GGUF model off the grid llama.cpp chose for it. Here its int4 graph is only the frame:
every ``MatMulNBits`` gets the blocks of the GGUF tensors it stands for (``sources.gguf_blocks``:
codes and scales moved over unchanged; fused q/k/v rows concatenated, mixed formats widened
exactly), formats with a minimum (Q4_1, Q5_1, Q4_K) get their per-block offsets added as
``blocksum(x) @ offsets.T`` (one small MatMul per node, the block sums shared by nodes that read the
same input), and the tied embedding gathers the same blocks as the output layer
(``GatherBlockQuantized``). Before anything is written, each node's dequantized weight must equal
the torch model's (transformers' dequantization of the same file) bit for bit, so a GGUF whose
layout this code does not know, or weights changed by an earlier pass, is refused instead of
silently mis-wired.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unbottle.passes import block_quant
from unbottle.passes.genai_edit import GraphEditor, save, sibling_groups
from unbottle.sources import gguf_blocks as gb
from unbottle.sources import gguf_reader as gr
from unbottle.sources.gguf_rows import concat_rows

# builder node path (layers.N/<group>/<proj>) → the GGUF tensors whose rows it holds, in order
_PARTS = {
    "attn/q_proj": ("attn_q",),
    "attn/k_proj": ("attn_k",),
    "attn/v_proj": ("attn_v",),
    "attn/qkv_proj": ("attn_q", "attn_k", "attn_v"),
    "attn/o_proj": ("attn_output",),
    "mlp/gate_proj": ("ffn_gate",),
    "mlp/up_proj": ("ffn_up",),
    "mlp/gate_up_proj": ("ffn_gate", "ffn_up"),
    "mlp/down_proj": ("ffn_down",),
}
# GGUF tensor → the transformers module whose weight transformers dequantized from it
_MODULES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_NODE = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+)/MatMul")


def import_blocks(graph_path: Path, gguf_path: Path, model: Any, accuracy_level: int) -> dict[str, Any]:
    """Rewrite the builder's graph at ``graph_path`` in place with the GGUF file's blocks.

    Returns:
        A summary: ``formats`` (GGUF type → number of nodes), ``offset_nodes`` and ``embedding``.

    Raises:
        ValueError: a node the file has no tensors for, an unsupported block type, or a weight whose
            dequantization differs from the model's (naming the node and what to do).
    """
    tensors = gr.gguf_tensors(gguf_path)
    expected = _expected_weights(model)
    text = model.config.get_text_config(decoder=True)
    heads = {"attn_q": text.num_attention_heads, "attn_k": getattr(text, "num_key_value_heads", None)}
    checked: dict[str, gb.NBitsWeight] = {}  # GGUF name → its blocks, already compared with the model

    def node_weight(node: str) -> tuple[list[str], gb.NBitsWeight]:
        names = _gguf_names(node, tensors)
        return names, _checked(node, names, tensors, expected, heads, checked)

    return _rewrite(
        graph_path,
        node_weight,
        lambda: _embedding_weight(tensors, expected, checked),
        expected,
        accuracy_level,
    )


def quantize_into(
    graph_path: Path,
    model: Any,
    accuracy_level: int,
    format_of: Callable[[str], str],
    importance: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Rewrite the builder's graph with llama.cpp block formats computed from the model's float weights.

    ``format_of(module name)`` picks each weight's format (``passes.block_quant.FORMATS``);
    ``importance`` (module name → per-input-channel mean square activation) weights the Q4_1 search.
    The embedding of a tied model gathers the output layer's blocks; an untied one gets its own, in
    the output layer's format. Same summary as ``import_blocks``.
    """
    expected = _expected_weights(model)
    lookup = _modules(model)
    out, embed = model.get_output_embeddings(), model.get_input_embeddings()
    tied = out is not None and embed is not None and out.weight is embed.weight
    names = {} if tied else {"output.weight": None}  # _gguf_names only asks which names exist
    done: dict[str, gb.NBitsWeight] = {}

    output_name = lookup("output.weight")[0]

    def blocks(name: str) -> gb.NBitsWeight:
        if name not in done:  # a tied token_embd is the output layer: its format and importance
            module = output_name if name == "token_embd.weight" else lookup(name)[0]
            imp = None if importance is None else importance.get(module)
            done[name] = block_quant.quantize(expected(name), format_of(module), imp)
        return done[name]

    def node_weight(node: str) -> tuple[list[str], gb.NBitsWeight]:
        parts = _gguf_names(node, names)
        return parts, concat_rows([blocks(p) for p in parts])

    def embedding() -> gb.NBitsWeight:
        if tied:
            return blocks("token_embd.weight")
        return block_quant.quantize(expected("token_embd.weight"), format_of(output_name))

    return _rewrite(graph_path, node_weight, embedding, expected, accuracy_level)


def _rewrite(
    graph_path: Path,
    node_weight: Callable[[str], tuple[list[str], gb.NBitsWeight]],
    embedding: Callable[[], gb.NBitsWeight | None],
    expected: Callable[[str], np.ndarray],
    accuracy_level: int,
) -> dict[str, Any]:
    """Every MatMulNBits of the graph and its embedding set from the blocks given; siblings fused
    (MatMuls reading the same input in the same format: an MLP's gate and up), pruned, saved."""
    import onnx

    proto = onnx.load(str(graph_path))
    editor = GraphEditor(proto)
    formats: dict[str, int] = {}
    offset_nodes = fused = 0
    nodes = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
    weights = {n.name: node_weight(n.name) for n in nodes}
    for group in sibling_groups(nodes, {k: w for k, (_, w) in weights.items()}):
        node, weight = editor.fuse(group, [weights[n.name][1] for n in group])
        weights[node.name] = ([], weight)
        fused += len(group) - 1
        nodes = [n for n in nodes if n not in group] + [node]
    for node in nodes:
        names, weight = weights[node.name]
        editor.set_matmul(node, weight, accuracy_level, tied=names == ["token_embd.weight"])
        offset_nodes += weight.offsets is not None
        formats[weight.qtype] = formats.get(weight.qtype, 0) + 1
    said = editor.set_embedding(embedding(), expected("token_embd.weight"))
    editor.prune()
    save(proto, graph_path)
    return {"formats": formats, "offset_nodes": offset_nodes, "fused": fused, "embedding": said}


def _modules(model: Any) -> Callable[[str], tuple[str, Any]]:
    """GGUF tensor name → (name, module) of the transformers module holding that weight."""
    modules = dict(model.named_modules())
    prefix = next((p for p in ("model.layers.", "model.language_model.layers.") if p + "0" in modules), None)
    special = {
        "output.weight": model.get_output_embeddings(),
        "token_embd.weight": model.get_input_embeddings(),
    }
    special_names = {g: next((n for n, m in modules.items() if m is mod), g) for g, mod in special.items()}

    def lookup(gguf_name: str) -> tuple[str, Any]:
        if gguf_name in special:
            name, module = special_names[gguf_name], special[gguf_name]
        else:
            _, layer, kind, _ = gguf_name.split(".")
            name = f"{prefix}{layer}.{_MODULES[kind]}"
            module = modules.get(name) if prefix else None
        if module is None:
            raise ValueError(f"the model has no module for GGUF tensor {gguf_name}")
        return name, module

    return lookup


def _expected_weights(model: Any) -> Callable[[str], np.ndarray]:
    """GGUF tensor name → the torch model's float32 weight (N, K) for it."""
    lookup = _modules(model)
    return lambda name: lookup(name)[1].weight.detach().float().numpy()


def _gguf_names(node: str, tensors: dict[str, gr.GGUFTensor]) -> list[str]:
    if node.startswith("/lm_head/"):
        return ["output.weight" if "output.weight" in tensors else "token_embd.weight"]
    match = _LAYER_NODE.match(node)
    parts = _PARTS.get(f"{match[2]}/{match[3]}") if match else None
    if parts is None:
        raise ValueError(
            f"the GenAI graph has a MatMul {node!r} this import does not map to GGUF tensors; "
            "use genai without weights=gguf (it re-quantizes the float weights)"
        )
    return [f"blk.{match[1]}.{p}.weight" for p in parts]


def _checked(
    node: str, names: list[str], tensors, expected, heads: dict[str, int | None], checked: dict
) -> gb.NBitsWeight:
    """The node's weight from the file's blocks, each part equal to the model's weight or refused."""
    parts = []
    for name in names:
        if name not in tensors:
            raise ValueError(f"{node}: the GGUF file has no tensor {name}")
        t = tensors[name]
        if t.qtype not in gb.SUPPORTED_TYPES:
            raise ValueError(
                f"{name} is {t.qtype}; weights=gguf carries {', '.join(gb.SUPPORTED_TYPES)} over; "
                "use genai without weights=gguf for this file"
            )
        weight, want = gb.blocks_to_nbits(t.data, t.qtype), expected(name)
        checked[name] = _matching_order(name, weight, want, heads.get(name.split(".")[-2]))
        parts.append(checked[name])
    return concat_rows(parts)


def _matching_order(name: str, weight: gb.NBitsWeight, want: np.ndarray, heads: int | None) -> gb.NBitsWeight:
    """``weight`` in the model's row order: as stored, or with llama.cpp's rotary interleave undone
    (its converter interleaves the q/k rows of Llama-layout models; ``heads`` of that projection)."""
    got = gb.dequantize(weight)
    if got.shape == want.shape and np.array_equal(got, want):
        return weight
    if got.shape == want.shape and heads and want.shape[0] % (2 * heads) == 0:
        order = gb.llama_rope_row_order(want.shape[0], heads)
        if np.array_equal(got[order], want):
            return gb.permute_rows(weight, order)
    raise ValueError(
        f"GGUF tensor {name} dequantizes to weights that differ from the model's (shapes {got.shape} vs "
        f"{want.shape}): was the model changed by an earlier pass? Put genai:weights=gguf first, on the "
        "model loaded from this .gguf file"
    )


def _embedding_weight(tensors, expected, checked: dict) -> gb.NBitsWeight | None:
    """token_embd's blocks when they equal the model's embedding; None: gather a float table instead.

    A tied output layer already compared them (``checked``): not dequantized a second time.
    """
    t = tensors.get("token_embd.weight")
    if t is None or t.qtype not in gb.SUPPORTED_TYPES:
        return None
    if "token_embd.weight" in checked:
        return checked["token_embd.weight"]
    weight = gb.blocks_to_nbits(t.data, t.qtype)
    want, got = expected("token_embd.weight"), gb.dequantize(weight)
    if got.shape != want.shape or not np.array_equal(got, want):
        raise ValueError(
            "GGUF tensor token_embd.weight dequantizes to weights that differ from the model's embedding: "
            "was the model changed by an earlier pass? Put genai:weights=gguf first"
        )
    return weight
