"""A storage-less tensor that stands for a graph's weights in ``parameters()``.

Size accounting (``unbottle.passes.sizes.model_size``) counts ``numel()`` as parameters and, for a
tensor subclass, the bytes of the inner tensors ``__tensor_flatten__`` names. ONNX Runtime keeps
the real weights; this wrapper reports their count and stored bytes without holding a copy, and
says ``cpu`` as its device so evaluators put their inputs there.
"""

from __future__ import annotations

from typing import Any

import torch


class StoredWeights(torch.Tensor):
    """``numel()``: the source model's parameters; ``stored``: a meta tensor of the graph's weight bytes."""

    stored: torch.Tensor

    @staticmethod
    def __new__(cls, n_parameters: int, n_bytes: int) -> StoredWeights:
        return torch.Tensor._make_wrapper_subclass(cls, (n_parameters,), dtype=torch.float32, device="cpu")

    def __init__(self, n_parameters: int, n_bytes: int) -> None:
        self.stored = torch.empty(n_bytes, dtype=torch.uint8, device="meta")

    def __tensor_flatten__(self) -> tuple[list[str], Any]:
        return ["stored"], None

    def __repr__(self, *args: Any, **kwargs: Any) -> str:
        return f"StoredWeights(parameters={self.numel()}, bytes={self.stored.numel()})"

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        raise TypeError(
            f"{func} called on the stand-in for an ONNX graph's weights; ONNX Runtime holds the real ones"
        )
