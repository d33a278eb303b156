"""Cutting a decoder down to size: rebuild smaller Linear layers, drop layers, keep the config true.

Llama, Mistral, Qwen2/3 and Gemma 2/3 share one layout: ``model.model.layers[i]`` holds ``self_attn``
with ``q/k/v/o_proj`` (grouped-query attention) and ``mlp`` with ``gate/up/down_proj`` (a gated MLP), so
their MLP channels and KV head groups can be cut. Phi-3, GPT-2, GPT-NeoX and OPT fuse or name these
differently, as do the encoders BERT and RoBERTa; for them only whole layers are dropped (``LAYOUTS``
says where each family keeps its layers). Every function here edits a model in place and updates
``model.config`` so the result saves with ``save_pretrained`` and loads back with ``from_pretrained``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from unbottle.passes.base import model_type

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a family keeps its decoder layers, and what each layer writes into the residual stream.

    Attributes:
        layers: path of the ``nn.ModuleList`` of decoder layers.
        writers: modules of a layer whose outputs are added to the residual stream.
        mlp / heads: None where the family has the Llama layout this target needs (``mlp.gate/up/
            down_proj``; ``self_attn.q/k/v/o_proj``), else what it has instead.
    """

    layers: str
    writers: tuple[str, ...]
    mlp: str | None = None
    heads: str | None = None


_LLAMA = Layout("model.layers", ("self_attn.o_proj", "mlp.down_proj"))
LAYOUTS: dict[str, Layout] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma2": _LLAMA,
    "gemma3_text": _LLAMA,
    "phi3": Layout(
        "model.layers",
        ("self_attn.o_proj", "mlp.down_proj"),
        mlp="a fused gate/up projection (gate_up_proj)",
        heads="a fused q/k/v projection (qkv_proj)",
    ),
    "gpt2": Layout(
        "transformer.h",
        ("attn.c_proj", "mlp.c_proj"),
        mlp="an ungated MLP (c_fc, c_proj)",
        heads="a fused q/k/v projection (c_attn)",
    ),
    "gpt_neox": Layout(
        "gpt_neox.layers",
        ("attention.dense", "mlp.dense_4h_to_h"),
        mlp="an ungated MLP (dense_h_to_4h, dense_4h_to_h)",
        heads="a fused q/k/v projection (query_key_value)",
    ),
    "opt": Layout(
        "model.decoder.layers",
        ("self_attn.out_proj", "fc2"),
        mlp="an ungated MLP (fc1, fc2)",
        heads="an attention output named out_proj, not o_proj",
    ),
    # encoders, as unbottle loads them (a masked-LM or classifier head around the stack)
    **{
        kind: Layout(
            f"{kind}.encoder.layer",
            ("attention.output.dense", "output.dense"),
            mlp="an ungated MLP (intermediate.dense, output.dense)",
            heads="q/k/v named query/key/value",
        )
        for kind in ("bert", "roberta")
    },
}


def unsupported(model: Any, target: str) -> str | None:
    """Why ``target`` (mlp, heads or layers) can't be cut from this model's family; None when it can."""
    kind = model_type(model)
    layout = LAYOUTS.get(kind)
    if layout is None:
        return f"prune-structured knows the layouts of {', '.join(LAYOUTS)}; {kind!r} is not one of them"
    blocker = {"mlp": layout.mlp, "heads": layout.heads}.get(target)
    if blocker is not None:
        wants = "gate/up/down_proj (a gated MLP)" if target == "mlp" else "separate q/k/v/o_proj"
        return f"target={target} needs the Llama layout's {wants}; {kind} has {blocker}. target=layers works"
    return None


def decoder_layers(model: Any, target: str) -> tuple[Any, str | None]:
    """The decoder's ``nn.ModuleList`` of layers, or None and the reason this model can't be cut."""
    if (reason := unsupported(model, target)) is not None:
        return None, reason
    layout = LAYOUTS[model_type(model)]
    try:
        layers = model.get_submodule(layout.layers)
    except AttributeError:
        layers = None
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return None, f"{type(model).__name__} has no {layout.layers} list of decoder layers"
    names = layout.writers if target == "layers" else [f"{a}.{n}" for a, ns in _SPLIT for n in ns]
    for i, layer in enumerate(layers):
        for name in names:
            module = _submodule(layer, name)
            weight = getattr(module, "weight", None)
            if weight is None or type(weight.data) is not torch.Tensor or not weight.is_floating_point():
                return None, (
                    f"{layout.layers}.{i}.{name} is a {type(module).__name__} without a plain float weight "
                    "(rewritten by an earlier pass?); run prune-structured first"
                )
            if target != "layers" and type(module) is not torch.nn.Linear:
                return None, f"{layout.layers}.{i}.{name} is a {type(module).__name__}, not a plain nn.Linear"
    return layers, None


_SPLIT = (("self_attn", ATTENTION), ("mlp", MLP))


def _submodule(layer: Any, name: str) -> Any:
    try:
        return layer.get_submodule(name)
    except AttributeError:
        return None


def writer_weights(model: Any, layer: Any) -> list[Any]:
    """The weights through which ``layer`` writes into the residual stream."""
    return [layer.get_submodule(name).weight for name in LAYOUTS[model_type(model)].writers]


def sliced_linear(linear: Any, rows: Any = None, cols: Any = None) -> Any:
    """A new ``nn.Linear`` with ``linear``'s weight rows ``rows`` (outputs) and columns ``cols`` (inputs)."""
    weight = linear.weight  # (out, in)
    bias = linear.bias
    if rows is not None:
        weight = weight[rows]
        bias = bias[rows] if bias is not None else None
    if cols is not None:
        weight = weight[:, cols]
    out_features, in_features = weight.shape
    new = torch.nn.utils.skip_init(
        torch.nn.Linear,
        in_features,
        out_features,
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.requires_grad_(linear.weight.requires_grad)
    return new


def shrink_mlp(mlp: Any, keep: Any) -> None:
    """Keep only intermediate channels ``keep`` (sorted indices): gate/up rows, down columns."""
    mlp.gate_proj = sliced_linear(mlp.gate_proj, rows=keep)
    mlp.up_proj = sliced_linear(mlp.up_proj, rows=keep)
    mlp.down_proj = sliced_linear(mlp.down_proj, cols=keep)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def shrink_attention(attn: Any, keep_groups: list[int], group_size: int, head_dim: int) -> None:
    """Keep only KV groups ``keep_groups``: each KV head and the ``group_size`` query heads sharing it."""

    def rows(heads: list[int]) -> Any:
        return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])

    q_heads = [g * group_size + i for g in keep_groups for i in range(group_size)]
    q_rows, kv_rows = rows(q_heads), rows(keep_groups)
    attn.q_proj = sliced_linear(attn.q_proj, rows=q_rows)
    attn.k_proj = sliced_linear(attn.k_proj, rows=kv_rows)
    attn.v_proj = sliced_linear(attn.v_proj, rows=kv_rows)
    attn.o_proj = sliced_linear(attn.o_proj, cols=q_rows)
    # Older layouts keep head counts on the module; the current ones read them from the config.
    for attr, value in (("num_heads", len(q_heads)), ("num_key_value_heads", len(keep_groups))):
        if hasattr(attn, attr):
            setattr(attn, attr, value)


def drop_layers(model: Any, remove: set[int]) -> list[int]:
    """Remove decoder layers ``remove``; renumber ``layer_idx`` (the KV-cache slot) and the config.

    Returns:
        The original indices of the layers kept, in order.
    """
    path = LAYOUTS[model_type(model)].layers
    parent, _, attr = path.rpartition(".")
    layers = model.get_submodule(path)
    old = len(layers)
    kept = [i for i in range(old) if i not in remove]
    layers = torch.nn.ModuleList([layers[i] for i in kept])
    setattr(model.get_submodule(parent), attr, layers)
    for new_idx, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    config = model.config
    config.num_hidden_layers = len(kept)
    for attr in ("layer_types", "mlp_layer_types"):
        per_layer = getattr(config, attr, None)
        if isinstance(per_layer, list | tuple) and len(per_layer) == old:
            setattr(config, attr, [per_layer[i] for i in kept])
    return kept


def head_counts_allowed(config: Any, kv_heads: int, group_size: int) -> bool:
    """Whether transformers accepts the config with ``kv_heads`` KV groups (e.g. Llama wants
    ``hidden_size`` divisible by the number of query heads); checked on a copy."""
    trial = copy.deepcopy(config)
    trial.num_attention_heads = kv_heads * group_size
    trial.num_key_value_heads = kv_heads
    validate = getattr(trial, "validate", None)
    if validate is None:
        return True
    try:
        validate()
    except Exception:  # huggingface_hub's StrictDataclassClassValidationError derives from Exception only
        return False
    return True
