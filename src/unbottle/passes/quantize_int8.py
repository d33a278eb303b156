"""Weight-only int8: int8 weights with float activations, for decode that is bound by weight reads.

Decoding one token reads every weight once, so storing them in a quarter of the bytes is most of
the win, and keeping activations in float avoids the outlier problem of dynamic int8 (measured on
smollm2-135m, 1024 tokens: per-channel weight-only int8 with lm_head included changes perplexity
by +0.06% with the torch kernel, -0.3% with torchao's; both within noise). Two kernels:

- ``torch``: torch's CPU int8 weight-only GEMM (``aten._weight_int8pack_mm``, one scale per output
  channel), fast in eager mode. Its fast path takes bf16 activations, so each layer casts its
  input to bf16 and its output back (the fp32 path of the same op is several times slower than
  an fp32 Linear).
- ``torchao``: torchao's ``Int8WeightOnlyConfig`` (per channel, or block-wise with
  ``group_size``). In eager mode it dequantizes the weight on every call (slower than fp32); it
  needs the compile pass to fuse the dequantization into the matmul.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch

from unbottle.core.errors import ConfigError
from unbottle.passes.base import (
    Applied,
    PassConfig,
    PassContext,
    Requirements,
    conv1d_note,
    conv1d_to_linear,
    handler,
)
from unbottle.passes.quantize_common import (
    ao_quantize,
    as_patterns,
    bf16_note,
    check_choice,
    select_linears,
    untie,
)

BACKENDS = ("torch", "torchao")


@dataclasses.dataclass(frozen=True)
class WeightOnlyInt8Config(PassConfig):
    """Symmetric int8 weights, float activations, for ``nn.Linear``.

    Attributes:
        backend: ``torch`` (``aten._weight_int8pack_mm``, per-channel, fast in eager mode) or
            ``torchao`` (``Int8WeightOnlyConfig``; per-channel or block-wise; fast under compile).
        group_size: None for one scale per output channel; an int for one scale per block of that
            many input features (block-wise, like ORT's MatMulNBits); needs ``backend=torchao``.
        exclude: module names or patterns to leave in float. Empty by default: lm_head is ~21% of
            smollm2-135m's weights, and int8 there cost no measurable perplexity.
    """

    name: ClassVar[str] = "wo-int8"
    summary: ClassVar[str] = "int8 weights (per channel or block-wise), float activations"
    requires: ClassVar[Requirements] = Requirements()
    saveable: ClassVar[bool] = False
    exportable: ClassVar[bool] = False
    backend: Literal["torch", "torchao"] = "torch"
    group_size: int | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice(self.backend, BACKENDS, self.name, "backend")
        group = self.group_size
        if isinstance(group, str) and group.strip().isdigit():
            group = int(group)
            object.__setattr__(self, "group_size", group)
        if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 2):
            raise ConfigError(
                f"wo-int8 group_size={self.group_size!r} given; allowed: none (per channel) or an "
                "integer ≥ 2 that divides the layers' in_features, e.g. 32, 64, 128"
            )
        if group is not None and self.backend == "torch":
            raise ConfigError(
                f"wo-int8 group_size={group} needs backend=torchao: torch's int8 weight-only kernel "
                "has one scale per output channel; use wo-int8:backend=torchao,group_size=..."
            )
        object.__setattr__(self, "exclude", as_patterns(self.exclude, self.name))

    def missing(self) -> list[str]:
        if self.backend == "torchao":
            return Requirements(packages=("torchao",)).missing()
        if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
            return [f"this torch ({torch.__version__}) has no aten._weight_int8pack_mm; use backend=torchao"]
        return []


@handler(WeightOnlyInt8Config)
def apply_wo_int8(model: Any, config: WeightOnlyInt8Config, context: PassContext) -> Applied:
    group = config.group_size

    def check(name: str, module: Any) -> str | None:
        if group is not None and module.in_features % group:
            return f"in_features {module.in_features} is not divisible by group_size {group}"
        return None

    converted = conv1d_to_linear(model)
    selected, skipped = select_linears(model, config.exclude, check)
    notes = conv1d_note(converted) + untie(model, list(selected))
    if config.backend == "torch":
        for name, module in selected.items():
            _swap(model, name, Int8WeightOnlyLinear.from_linear(module))
        notes += [
            "torch backend: aten._weight_int8pack_mm, one scale per output channel; activations are "
            "cast to bf16 around each int8 layer (the kernel's fast path)",
            bf16_note(),
        ]
    else:
        _torchao_weight_only(selected, group)
        granularity = f"blocks of {group} input features" if group else "one scale per output channel"
        notes.append(
            f"torchao backend: Int8WeightOnlyConfig, {granularity}; it dequantizes on every call in "
            "eager mode (slower than fp32): compose with the compile pass"
        )
    return Applied(model, touched=list(selected), skipped=skipped, notes=notes)


def _torchao_weight_only(selected: dict[str, Any], group: int | None) -> None:
    from torchao.quantization import Int8WeightOnlyConfig
    from torchao.quantization.granularity import PerGroup, PerRow

    granularity = PerGroup(group) if group else PerRow()
    ao_config = Int8WeightOnlyConfig(granularity=granularity, set_inductor_config=False)
    for module in selected.values():
        ao_quantize(module, ao_config)


def _swap(model: Any, name: str, new: Any) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


class Int8WeightOnlyLinear(torch.nn.Module):
    """A Linear with symmetric per-channel int8 weights run by ``aten._weight_int8pack_mm``.

    ``weight`` is the int8 matrix ``(out_features, in_features)`` (a frozen Parameter, so sizes and
    parameter counts see it); ``scale`` holds one bf16 scale per output channel.
    """

    def __init__(self, qweight: Any, scale: Any, bias: Any | None) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.weight = torch.nn.Parameter(qweight, requires_grad=False)  # (N, K) int8
        self.register_buffer("scale", scale)  # (N,) bf16
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: Any) -> Int8WeightOnlyLinear:
        """Quantize ``linear.weight`` per output channel: ``w ≈ q * scale``, ``q`` in [-127, 127]."""
        w = linear.weight.detach().float()  # (N, K)
        scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127  # (N,)
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return cls(q, scale.to(torch.bfloat16), linear.bias)

    def forward(self, x: Any) -> Any:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, K)
        y = torch.ops.aten._weight_int8pack_mm(x2, self.weight, self.scale)  # (M, N) bf16
        y = y.reshape(*lead, self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, int8 per-channel (aten._weight_int8pack_mm, bf16 compute)"
        )
