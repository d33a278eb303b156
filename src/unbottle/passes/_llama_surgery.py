"""Cutting a Llama-style decoder down to size: rebuild smaller Linear layers and keep the config true.

Llama, Mistral and Qwen2 share one layout: ``model.model.layers[i]`` holds ``self_attn`` with
``q/k/v/o_proj`` (grouped-query attention) and ``mlp`` with ``gate/up/down_proj`` (a gated MLP).
Every function here edits a model in place and updates ``model.config`` so the result saves with
``save_pretrained`` and loads back with ``from_pretrained``.
"""

from __future__ import annotations

from typing import Any

SUPPORTED = ("llama", "mistral", "qwen2")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def decoder_layers(model: Any) -> tuple[Any, str | None]:
    """The decoder's ``nn.ModuleList`` of layers, or None and the reason this model can't be cut."""
    import torch

    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in SUPPORTED:
        return None, (
            f"architecture {kind!r} is not supported; prune-structured knows the Llama layout "
            f"({', '.join(SUPPORTED)}: gated MLP and grouped-query attention)"
        )
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return None, f"{type(model).__name__} has no model.layers list of decoder layers"
    for i, layer in enumerate(layers):
        for parent, names in (("self_attn", ATTENTION), ("mlp", MLP)):
            for name in names:
                module = getattr(getattr(layer, parent, None), name, None)
                weight = getattr(module, "weight", None)
                if type(module) is not torch.nn.Linear or type(weight.data) is not torch.Tensor:
                    return None, (
                        f"model.layers.{i}.{parent}.{name} is a {type(module).__name__}, not a plain "
                        "nn.Linear (rewritten by an earlier pass?); run prune-structured first"
                    )
    return layers, None


def sliced_linear(linear: Any, rows: Any = None, cols: Any = None) -> Any:
    """A new ``nn.Linear`` with ``linear``'s weight rows ``rows`` (outputs) and columns ``cols`` (inputs)."""
    import torch

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
    import torch

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
    import torch

    decoder = model.model
    old = len(decoder.layers)
    kept = [i for i in range(old) if i not in remove]
    decoder.layers = torch.nn.ModuleList([decoder.layers[i] for i in kept])
    for new_idx, layer in enumerate(decoder.layers):
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
    import copy

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
