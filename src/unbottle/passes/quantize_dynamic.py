"""Dynamic int8: int8 weights, activations quantized to int8 on every call from their own range.

Both operands in int8 lets the GEMM use the CPU's int8 dot-product instructions (VNNI) and reads a
quarter of the weight bytes. The catch is the activation range: torch's kernel quantizes each
activation tensor with one scale, and Llama-family models have a few outlier channels that
stretch it (measured on smollm2-135m, 1024 tokens: +200% perplexity, lm_head excluded). torchao's
path uses one scale per token instead (+2% on the same text), but runs its int8 matmul through
torch.compile to be fast; in eager mode it is slower than fp32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

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
    check_bool,
    check_choice,
    int8_gemm_note,
    quiet,
    select_linears,
    untie,
)

BACKENDS = ("torch", "torchao")


@dataclasses.dataclass(frozen=True)
class DynamicInt8Config(PassConfig):
    """int8 weights and dynamically quantized int8 activations for ``nn.Linear``.

    Attributes:
        backend: ``torch`` (``torch.ao.quantization.quantize_dynamic``: fbgemm/oneDNN int8 GEMM,
            one activation scale per tensor, fast in eager mode) or ``torchao``
            (``Int8DynamicActivationInt8WeightConfig``: one activation scale per token, needs
            torch.compile for speed).
        per_channel: one weight scale per output channel (else one per tensor).
        exclude: module names or patterns to leave in float.
    """

    name: ClassVar[str] = "dynamic-int8"
    summary: ClassVar[str] = "int8 weights + int8 activations quantized at run time (torch or torchao)"
    requires: ClassVar[Requirements] = Requirements()
    saveable: ClassVar[bool] = False
    exportable: ClassVar[bool] = False
    backend: Literal["torch", "torchao"] = "torch"
    per_channel: bool = True
    exclude: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        check_choice(self.backend, BACKENDS, self.name, "backend")
        check_bool(self.per_channel, self.name, "per_channel")
        object.__setattr__(self, "exclude", as_patterns(self.exclude, self.name))

    def missing(self) -> list[str]:
        if self.backend == "torchao":
            return Requirements(packages=("torchao",)).missing()

        engines = set(torch.backends.quantized.supported_engines) - {"none"}
        return [] if engines else ["this torch build has no quantized engine (fbgemm, x86, onednn, qnnpack)"]


@handler(DynamicInt8Config)
def apply_dynamic_int8(model: Any, config: DynamicInt8Config, context: PassContext) -> Applied:
    check = _float32_only if config.backend == "torch" else None
    converted = conv1d_to_linear(model)
    selected, skipped = select_linears(model, config.exclude, check)
    notes = conv1d_note(converted) + untie(model, list(selected))
    if config.backend == "torch":
        _torch_dynamic(model, selected, config.per_channel)
        notes += [
            "torch backend: torch.ao.quantization.quantize_dynamic (deprecated by torch in favour of "
            "torchao, still shipped); activations get one scale per tensor, which outlier channels "
            "stretch (smollm2-135m: +200% perplexity); backend=torchao scales per token",
        ]
    else:
        _torchao_dynamic(selected, config.per_channel)
        notes.append(
            "torchao backend: Int8DynamicActivationInt8WeightConfig, one activation scale per token; "
            "its int8 matmul is slower than fp32 in eager mode: compose with the compile pass"
        )
    notes.append(int8_gemm_note())
    return Applied(model, touched=list(selected), skipped=skipped, notes=notes)


def _float32_only(name: str, module: Any) -> str | None:
    if module.weight.dtype != torch.float32:
        return f"{module.weight.dtype} weights; torch's dynamic int8 Linear takes float32 (or use torchao)"
    return None


def _torch_dynamic(model: Any, selected: dict[str, Any], per_channel: bool) -> None:
    if not selected:  # an empty spec is fine, but None would mean "every Linear"
        return
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with quiet():  # qconfig keyed by qualified name: exactly the selected layers are swapped
        quantize_dynamic(model, {name: qconfig for name in selected}, dtype=torch.qint8, inplace=True)


def _torchao_dynamic(selected: dict[str, Any], per_channel: bool) -> None:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from torchao.quantization.granularity import PerRow, PerTensor

    weight_granularity = PerRow() if per_channel else PerTensor()
    # set_inductor_config=False: a quantization pass must not change process-wide compiler settings
    ao_config = Int8DynamicActivationInt8WeightConfig(
        granularity=[PerRow(), weight_granularity], set_inductor_config=False
    )
    for module in selected.values():
        ao_quantize(module, ao_config)
