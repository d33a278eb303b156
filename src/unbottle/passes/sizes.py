"""Parameter counts and bytes that see through quantized tensor subclasses and packed modules.

torchao keeps packed data inside wrapper tensors, and torch's dynamic-quantized Linear keeps its
weight outside ``parameters()``; counting ``numel * element_size`` of what is visible would report
fp32 sizes for an int4 model, or no weights at all for a dynamic-int8 one.
"""

from __future__ import annotations

from typing import Any

import torch


def tensor_bytes(t: Any) -> int:
    """Bytes actually stored: the inner tensors of a subclass (``__tensor_flatten__``), else plain size."""
    if hasattr(t, "__tensor_flatten__") and type(t).__name__ not in ("Tensor", "Parameter"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    if getattr(t, "is_quantized", False):  # torch qint8: 1 byte per element + scale/zero-point per channel
        per_channel = t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
        return t.numel() + 16 * (t.q_per_channel_scales().numel() if per_channel else 1)
    return t.numel() * t.element_size()


def model_size(model: Any) -> tuple[int, int]:
    """(unique parameter elements incl. packed weights, bytes of parameters + buffers + packed weights)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    total = sum(tensor_bytes(t) for t in tensors.values())
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            params += weight.numel() + (bias.numel() if bias is not None else 0)
            total += tensor_bytes(weight) + (tensor_bytes(bias) if bias is not None else 0)
    return params, total
