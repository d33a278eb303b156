"""Precision: run the model in bfloat16 (or float16 where the hardware has native fp16).

Halving the bytes of every weight halves what decode reads per token. Modules named in
``keep_fp32`` stay in float32 with casts at their boundary (e.g. ``lm_head``, whose logits feed
a softmax over 49k tokens). On CPU bf16 matmuls are only fast with AVX512_BF16 or AMX.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch

from unbottle.core.env import cpu_info
from unbottle.core.errors import ConfigError
from unbottle.passes.base import Applied, PassConfig, PassContext, Requirements, handler, matches


@dataclasses.dataclass(frozen=True)
class PrecisionConfig(PassConfig):
    """Cast to ``dtype``; keep modules matching ``keep_fp32`` in float32."""

    name: ClassVar[str] = "precision"
    summary: ClassVar[str] = "bf16/fp16 weights and compute; chosen modules kept in fp32"
    requires: ClassVar[Requirements] = Requirements()
    # Re-applied on load (a cast, instantly): kept-fp32 modules need their casting hooks back.
    saveable: ClassVar[bool] = False
    exportable: ClassVar[bool] = False
    dtype: Literal["bfloat16", "float16"] = "bfloat16"
    keep_fp32: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dtype not in ("bfloat16", "float16"):
            raise ConfigError(f"precision dtype {self.dtype!r} given; allowed: bfloat16, float16")
        if isinstance(self.keep_fp32, str):
            object.__setattr__(self, "keep_fp32", tuple(p for p in self.keep_fp32.split("|") if p))

    def missing(self) -> list[str]:
        if torch.cuda.is_available():
            return []
        flags = cpu_info().get("flags", {})
        if self.dtype == "bfloat16" and not (flags.get("avx512_bf16") or flags.get("amx_bf16")):
            return ["bf16 on CPU needs AVX512_BF16 or AMX-BF16 to be faster than fp32; this CPU has neither"]
        if self.dtype == "float16" and not flags.get("avx512_fp16"):
            return ["fp16 needs a GPU or a CPU with AVX512-FP16; use dtype=bfloat16"]
        return []


@handler(PrecisionConfig)
def apply_precision(model: Any, config: PrecisionConfig, context: PassContext) -> Applied:
    dtype = getattr(torch, config.dtype)
    model.to(dtype)
    kept = []
    for name, module in model.named_modules():
        if name and config.keep_fp32 and matches(name, config.keep_fp32) and not _inside(name, kept):
            module.to(torch.float32)
            module.register_forward_pre_hook(_cast_inputs(torch.float32))
            kept.append(name)
    touched = [n for n, m in model.named_modules() if n and not list(m.children()) and not _inside(n, kept)]
    notes = [f"kept in float32: {', '.join(kept)}"] if kept else []
    if config.keep_fp32 and not kept:
        notes.append(f"keep_fp32={'|'.join(config.keep_fp32)} matched no module")
    return Applied(model, touched=touched, skipped={n: "kept in float32" for n in kept}, notes=notes)


def _inside(name: str, parents: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in parents)


def _cast_inputs(dtype: Any):
    def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            a.to(dtype) if hasattr(a, "is_floating_point") and a.is_floating_point() else a for a in args
        )

    return hook
