"""Weight-only int4, group-wise: about a sixth of the fp32 weight bytes, usually at an accuracy cost.

Round-to-nearest int4 usually costs real accuracy (smollm2-135m, 1024 tokens, lm_head excluded:
group 64 +34% perplexity; lm_head in int4 adds +9%). The exception is weights that already sit on
an int4 grid: the packaged smollm2-135m is a Q4_1 GGUF (blocks of 32 with a scale and a minimum),
which asymmetric group-32 quantization with a float zero point reproduces almost exactly (+0.2%).

Which path runs: torchao 0.18's ``Int4WeightOnlyConfig`` has no CPU packing format (its plain
format needs the CUDA-only ``mslk`` package, its tile format CUDA tinygemm), so weights become
torchao's CPU int4 tensor (prototype ``Int4OpaqueTensor``), which calls torch's CPU int4 GEMM
``aten._weight_int4pack_mm_for_cpu``. That kernel's fast path takes bf16 activations (its fp32
path is ~25x slower than an fp32 Linear), so each int4 layer computes in bf16 with its input cast
in and its output cast back. Asymmetric quantization uses torchao's tinygemm qparams; symmetric
uses torchao's affine primitives and the same kernel with zero offset.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch

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
    as_patterns,
    bf16_note,
    check_bool,
    check_choice,
    select_linears,
    untie,
)

GROUP_SIZES = (32, 64, 128)
TILE_N = 16  # the CPU int4 kernel packs output channels in tiles of 16


@dataclasses.dataclass(frozen=True)
class WeightOnlyInt4Config(PassConfig):
    """Group-wise int4 weights, bf16 compute, for ``nn.Linear``.

    Attributes:
        group_size: input features per scale (32, 64 or 128); layers whose in_features it does
            not divide are skipped.
        symmetric: zero point fixed at 0 (else one zero point per group, the default).
        exclude: module names or patterns to leave in float.
    """

    name: ClassVar[str] = "wo-int4"
    summary: ClassVar[str] = "group-wise int4 weights (asymmetric or symmetric), bf16 compute"
    requires: ClassVar[Requirements] = Requirements(packages=("torchao",))
    saveable: ClassVar[bool] = False
    exportable: ClassVar[bool] = False
    group_size: Literal[32, 64, 128] = 128
    symmetric: bool = False
    exclude: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        group = self.group_size
        if isinstance(group, str) and group.strip().isdigit():  # the command line gives text
            object.__setattr__(self, "group_size", int(group))
        check_choice(self.group_size, GROUP_SIZES, self.name, "group_size")
        check_bool(self.symmetric, self.name, "symmetric")
        object.__setattr__(self, "exclude", as_patterns(self.exclude, self.name))

    def missing(self) -> list[str]:
        reasons = type(self).requires.missing()
        if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
            reasons.append(f"torch {torch.__version__} lacks the CPU int4 kernel _weight_int4pack_mm_for_cpu")
        return reasons


@handler(WeightOnlyInt4Config)
def apply_wo_int4(model: Any, config: WeightOnlyInt4Config, context: PassContext) -> Applied:
    group = config.group_size

    def check(name: str, module: Any) -> str | None:
        if module.weight.device.type != "cpu":
            return f"on {module.weight.device.type}; this int4 path is CPU-only"
        if module.in_features % group:
            return f"in_features {module.in_features} is not divisible by group_size {group}"
        if module.out_features % TILE_N:
            return f"out_features {module.out_features} is not a multiple of {TILE_N} (the kernel's tile)"
        return None

    converted = conv1d_to_linear(model)
    selected, skipped = select_linears(model, config.exclude, check)
    notes = conv1d_note(converted) + untie(model, list(selected))
    for module in selected.values():
        dtype = module.weight.dtype
        weight = int4_weight(module.weight.detach().to(torch.bfloat16), group, config.symmetric)
        # New Parameters, never module.to(): a tied weight must not change under its other owner.
        module.weight = torch.nn.Parameter(weight, requires_grad=False)
        if module.bias is not None:
            module.bias = torch.nn.Parameter(module.bias.detach().to(torch.bfloat16), requires_grad=False)
        if dtype != torch.bfloat16:
            module.register_forward_pre_hook(_cast_inputs(torch.bfloat16))
            module.register_forward_hook(_cast_output(dtype))
    kind = "symmetric" if config.symmetric else "asymmetric"
    notes += [
        f"int4 {kind}, group {group}: torchao Int4OpaqueTensor (prototype) → "
        "aten._weight_int4pack_mm_for_cpu; torchao's Int4WeightOnlyConfig has no CPU format in this version",
        "int4 layers compute in bf16 (inputs cast in, outputs back): the kernel's fp32 path is ~25x slower",
        bf16_note(),
    ]
    return Applied(model, touched=list(selected), skipped=skipped, notes=notes)


def int4_weight(w: Any, group: int, symmetric: bool) -> Any:
    """A bf16 ``(N, K)`` weight as torchao's CPU int4 tensor, one scale (and zero) per ``group``.

    Asymmetric: torchao's tinygemm qparams, ``w ≈ (q - 8) * scale + zero`` with ``q`` in [0, 15].
    Symmetric: ``w ≈ q * scale`` with ``q`` in [-8, 7], stored as ``q + 8`` with ``zero = 0``.
    """
    from torchao.prototype.quantization.int4 import Int4OpaqueTensor

    if not symmetric:
        return Int4OpaqueTensor.from_hp(w, [1, group])
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine, quantize_affine
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    n = w.shape[0]
    scale, zero = choose_qparams_affine(
        w,
        MappingType.SYMMETRIC,
        [1, group],
        torch.int8,
        quant_min=-8,
        quant_max=7,
        eps=1e-6,
        scale_dtype=torch.bfloat16,
    )  # scale: (N, K / group)
    q = quantize_affine(w, [1, group], scale, zero, torch.int32, quant_min=-8, quant_max=7) + 8  # (N, K)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)  # (N, K / 2) uint8
    scale = scale.reshape(n, -1)
    scale_and_zero = pack_tinygemm_scales_and_zeros(scale, torch.zeros_like(scale), torch.bfloat16)
    return Int4OpaqueTensor(packed, scale_and_zero, [1, group], w.shape)


def _cast_inputs(dtype: Any):
    def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    return hook


def _cast_output(dtype: Any):
    def hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
        return output.to(dtype)

    return hook
