"""Trace a transformers causal LM into one ONNX graph that carries its KV cache in and out.

optimum's exporter doesn't install beside transformers 5, so the export is ours. ``torch.export``
can't take a ``DynamicCache`` as an input, so a small wrapper takes flat tensors, builds the cache
inside ``forward`` and returns the present key/values flat again. One graph serves prefill (a past
of length 0) and every decode step, and a ``logits_index`` input picks the positions that get
logits, so decode pays for one row of the vocabulary projection and evaluators get them all.

Every layer keeps all its past positions, sliding-window ones included (Mistral, Gemma 2/3): the
model's own mask functions cut each sliding layer's window from the query and key indices, as they
do in torch for a plain cache, so such a layer costs the cache memory of a full one, never accuracy.
``OrtCausalLM`` gives every layer a full cache layer to match.

Graph inputs: ``input_ids (B, T)``, ``attention_mask (B, P + T)``, ``position_ids (B, T)``,
``logits_index (K,)`` and ``past.{i}.key`` / ``past.{i}.value`` ``(B, kv_heads, P, head_dim)``.
Outputs: ``logits (B, K, V)`` and ``present.{i}.key`` / ``present.{i}.value`` ``(B, kv_heads, P + T,
head_dim)``. Batch, T, P and K are dynamic.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import warnings
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from unbottle.runtime.caches import cache_keyword

INPUTS = ("input_ids", "attention_mask", "position_ids", "logits_index")
# Part of every cached export's key: bump it when a change here changes the graph written.
EXPORT_FORMAT = 2
# Example sizes for tracing: none is 0 or 1, which torch.export would specialise.
_BATCH, _PAST, _NEW = 2, 5, 3
# Where the exporter records each node's module path (``['', 'model', 'model.model.layers.0', ...]``).
_SCOPES = "pkg.torch.onnx.name_scopes"
MODULE_KEY = "unbottle.module"


def past_names(n_layers: int, prefix: str = "past") -> list[str]:
    """``past.0.key, past.0.value, past.1.key, ...``: the flat cache order of inputs and outputs."""
    return [f"{prefix}.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def cache_layers(model: Any) -> int:
    """Decoder layers that keep a cache (the text config's ``num_hidden_layers``)."""
    return int(model.config.get_text_config(decoder=True).num_hidden_layers)


def unsupported(model: Any, attention: str = "eager") -> str | None:
    """Why this exporter can't trace ``model``'s architecture (None when it can), judged from its config.

    Every layer keeps a full cache in the graph; sliding-window layers (Mistral, Gemma 2/3) get their
    window from the model's own mask functions, which place keys by position, so only full and
    sliding attention are known here. Chunked, linear-attention or shared-KV layers are not.
    """
    can_generate = getattr(model, "can_generate", None)
    if not callable(can_generate) or not can_generate():
        return f"the onnx export takes a causal LM with a KV cache; {type(model).__name__} is not one"
    text = model.config.get_text_config(decoder=True)
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    if other := sorted(kinds - {"full_attention", "sliding_attention"}):
        return (
            f"its layers include {other}; the onnx export handles full_attention and sliding_attention "
            "layers only"
        )
    if getattr(text, "kv_sharing_modes", None) is not None:
        return "its layers share KV caches; the onnx export gives every layer its own"
    if attention == "sdpa" and not getattr(type(model), "_supports_sdpa", True):
        return f"transformers has no sdpa attention for {type(model).__name__}; use attention=eager"
    return None


def check_exportable(model: Any, attention: str = "eager") -> None:
    """Refuse, with the reason, what this exporter can't trace: an unknown architecture, non-float32 weights.

    Raises:
        ValueError: naming what was found and what to do instead.
    """
    if (reason := unsupported(model, attention)) is not None:
        raise ValueError(reason)
    check_float32(model)


def check_float32(model: Any) -> None:
    """Refuse non-float32 weights, naming what was found and what to do instead.

    Raises:
        ValueError: some parameters are not float32.
    """
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        found = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        raise ValueError(
            f"the onnx export needs a float32 model; its parameters are {found}. Put the onnx pass before "
            "precision/quantize passes, or use onnx:quantize=int8-block|int4-block for ONNX Runtime's own"
        )


def make_wrapper(model: Any) -> Any:
    """An ``nn.Module`` taking ``(input_ids, attention_mask, position_ids, logits_index, *past)`` flat."""
    from transformers import DynamicCache

    n_layers = cache_layers(model)
    cache_kw = cache_keyword(model)

    class _Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, logits_index, *past):  # noqa: ANN001
            cache = DynamicCache()  # full layers everywhere: windows come from the masks
            for i in range(n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(
                input_ids=input_ids,  # (B, T)
                attention_mask=attention_mask,  # (B, P + T)
                position_ids=position_ids,  # (B, T)
                use_cache=True,
                logits_to_keep=logits_index,  # (K,) positions in 0..T-1
                **{cache_kw: cache},
            )
            presents = [t for layer in out[cache_kw].layers for t in (layer.keys, layer.values)]
            return (out.logits, *presents)  # (B, K, V), each (B, kv_heads, P + T, head_dim)

    return _Wrapper().eval()


def example_inputs(model: Any) -> tuple[Any, ...]:
    """Inputs to trace with: the past comes from a real prefill, so its shapes are the model's own."""
    from transformers import DynamicCache

    vocab = int(model.config.get_text_config(decoder=True).vocab_size)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (_BATCH, _PAST), generator=g)
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=prompt, use_cache=True, **{cache_keyword(model): cache})
    past = [t.contiguous() for layer in cache.layers for t in (layer.keys, layer.values)]
    input_ids = torch.randint(0, vocab, (_BATCH, _NEW), generator=g)  # (B, T)
    mask = torch.ones(_BATCH, _PAST + _NEW, dtype=torch.long)  # (B, P + T)
    positions = torch.arange(_PAST, _PAST + _NEW).expand(_BATCH, _NEW).contiguous()  # (B, T)
    return (input_ids, mask, positions, torch.arange(_NEW), *past)


def export_graph(model: Any, opset: int, attention: str) -> Any:
    """Trace ``model`` with ``torch.onnx.export(dynamo=True)``; return the ``onnx_ir.Model``.

    Args:
        model: a float32 transformers causal LM (left in eval mode, its attention restored).
        opset: the ONNX opset of the default domain.
        attention: the attention implementation traced (``eager`` exports fewer nodes than ``sdpa``).
    """
    check_exportable(model, attention)
    n_layers = cache_layers(model)
    args = example_inputs(model)
    dyn = Dim.DYNAMIC
    shapes = (
        {0: dyn, 1: dyn},  # input_ids (B, T)
        {0: dyn, 1: dyn},  # attention_mask (B, P + T)
        {0: dyn, 1: dyn},  # position_ids (B, T)
        {0: dyn},  # logits_index (K,)
        tuple({0: dyn, 2: dyn} for _ in range(2 * n_layers)),  # past (B, kv_heads, P, head_dim)
    )
    before = model.config._attn_implementation
    model.set_attn_implementation(attention)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                make_wrapper(model),
                args,
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=[*INPUTS, *past_names(n_layers)],
                output_names=["logits", *past_names(n_layers, "present")],
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
    finally:
        model.set_attn_implementation(before)
    graph = program.model
    split_gemms(graph)
    tag_modules(graph)
    fold_transposed_weights(graph)
    return graph


def tag_modules(model: Any) -> None:
    """Record on every MatMul/Gather the torch module it came from (``model.layers.0.self_attn.q_proj``)."""
    for node in model.graph:
        if node.op_type not in ("MatMul", "Gather"):
            continue
        scopes = node.metadata_props.get(_SCOPES)
        if not scopes:
            continue
        try:
            names = [s for s in ast.literal_eval(scopes) if s.startswith("model.")]
        except (ValueError, SyntaxError):
            continue
        if names:
            node.metadata_props[MODULE_KEY] = names[-1].removeprefix("model.")


def split_gemms(model: Any) -> int:
    """Rewrite each ``Gemm`` with a constant weight as ``MatMul`` (+ ``Add`` of its bias); return how many.

    GPT-2's ``Conv1D`` and OPT's feed-forward layers (2-D inputs) trace as ``Gemm``, which ONNX
    Runtime's weight quantizers pass over: split, they see every weight, and its graph optimiser
    fuses the pair back where that is faster.
    """
    import onnx_ir as ir

    split = 0
    for node in list(model.graph):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or node.outputs[0].is_graph_output():
            continue
        a, b, *rest = node.inputs
        bias = rest[0] if rest else None
        attrs = node.attributes
        plain = attrs.get_float("alpha", 1.0) == 1.0 and attrs.get_float("beta", 1.0) == 1.0
        if not plain or attrs.get_int("transA", 0) or b is None or b.const_value is None:
            continue
        weight = b
        if attrs.get_int("transB", 0):  # nn.Linear's (out, in) weight: store it (in, out)
            array = np.ascontiguousarray(b.const_value.numpy().T)
            weight = ir.Value(name=f"{b.name}.transposed", const_value=ir.tensor(array))
            weight.dtype, weight.shape = ir.DataType.from_numpy(array.dtype), ir.Shape(array.shape)
            model.graph.register_initializer(weight)
        props = dict(node.metadata_props)
        new = [ir.Node("", "MatMul", [a, weight], name=f"{node.name}_matmul", metadata_props=props)]
        if bias is not None:
            new.append(ir.Node("", "Add", [new[0].outputs[0], bias], name=f"{node.name}_bias"))
        out = new[-1].outputs[0]
        out.dtype, out.shape = node.outputs[0].dtype, node.outputs[0].shape
        model.graph.insert_before(node, new)
        ir.convenience.replace_all_uses_with(node.outputs[0], out)
        model.graph.remove(node, safe=True)
        split += 1
    return split


def fold_transposed_weights(model: Any) -> int:
    """Give each MatMul reading ``Transpose(weight)`` its own transposed weight; return how many.

    A tied ``lm_head`` is traced as the embedding transposed at run time: folded, ONNX Runtime's
    weight quantizers can see (and quantize) it, and nothing is transposed per token.
    """
    import onnx_ir as ir

    folded = 0
    for node in list(model.graph):
        if node.op_type != "MatMul":
            continue
        transpose = node.inputs[1].producer() if node.inputs[1] is not None else None
        if transpose is None or transpose.op_type != "Transpose":
            continue
        source = transpose.inputs[0]
        if source.const_value is None or source.const_value.numpy().ndim != 2:
            continue
        perm = list(transpose.attributes.get_ints("perm", [1, 0]))
        array = np.ascontiguousarray(source.const_value.numpy().transpose(perm))
        value = ir.Value(name=f"{source.name}.transposed", const_value=ir.tensor(array))
        value.dtype, value.shape = ir.DataType.from_numpy(array.dtype), ir.Shape(array.shape)
        model.graph.register_initializer(value)
        node.replace_input_with(1, value)
        folded += 1
    if folded:
        from onnx_ir.passes.common import RemoveUnusedNodesPass

        RemoveUnusedNodesPass()(model)
    return folded


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints its progress and warns about optional ops (torchvision) it won't need."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)
