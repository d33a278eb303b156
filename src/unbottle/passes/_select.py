"""Which ``nn.Linear`` layers a weight-rewriting pass may touch, and why the others are left alone.

Shared by the pruning and low-rank passes: a layer is skipped when the user excluded it, when its
weight is tied to another module (rewriting it would silently change that module too, e.g. the
input embedding behind a tied ``lm_head``), or when its weight is not a plain floating tensor (an
earlier quantization pass packed it).
"""

from __future__ import annotations

from typing import Any

import torch

from unbottle.passes.base import conv1d_layers, linear_layers, matches


def split_patterns(value: Any) -> Any:
    """``"a|b"`` → ``("a", "b")``; tuples and lists pass through as tuples; anything else unchanged."""
    if isinstance(value, str):
        return tuple(p for p in value.split("|") if p)
    if isinstance(value, list):
        return tuple(value)
    return value


def editable_linears(model: Any, exclude: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split the model's Linear (and GPT-2 ``Conv1D``) layers into those a pass may rewrite and the rest.

    Returns:
        ``(layers, skipped)``: name → module for the editable layers, name → reason for the others.
    """
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    layers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    linears = {**linear_layers(model), **conv1d_layers(model)}
    for name, module in sorted(linears.items(), key=lambda item: order[item[0]]):
        weight = module.weight
        shared = [n for n in owners.get(id(weight), []) if n != f"{name}.weight"]
        if exclude and matches(name, exclude):
            skipped[name] = f"excluded by exclude={'|'.join(exclude)}"
        elif shared:
            skipped[name] = f"weight is tied to {shared[0]}; rewriting it would change that module too"
        elif type(weight.data) is not torch.Tensor or not weight.is_floating_point():
            skipped[name] = (
                f"weight is a {type(weight.data).__name__} ({weight.dtype}), not a plain float tensor"
            )
        else:
            layers[name] = module
    return layers, skipped
