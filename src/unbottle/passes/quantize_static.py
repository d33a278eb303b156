"""Static int8: int8 weights and activations, with activation scales fixed from calibration data.

Fixing each layer's activation scale ahead of time saves the per-call range search of dynamic
quantization and makes the graph static (what int8 inference engines compile best). The scales
come from running calibration text through the model and recording every layer's input range
(absolute max, one scale per layer). That range is exactly what activation outliers stretch, so
on Llama-family models expect a larger accuracy cost than dynamic per-token scales.

Runs through torchao's ``Int8StaticActivationInt8WeightConfig``: like torchao's other int8 paths,
its int8 matmul needs torch.compile to be fast; in eager mode it is slower than fp32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from unbottle.core.errors import ConfigError
from unbottle.data.prompts import CORPUS, make_prompts
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
    int8_gemm_note,
    select_linears,
    untie,
)


@dataclasses.dataclass(frozen=True)
class StaticInt8Config(PassConfig):
    """int8 weights and int8 activations with calibrated per-layer scales, for ``nn.Linear``.

    Attributes:
        calibration_batches: at most this many calibration batches are run.
        calibration_tokens: tokens per batch when the batches are built from the packaged corpus.
        per_channel: one weight scale per output channel (else one per tensor).
        exclude: module names or patterns to leave in float.
    """

    name: ClassVar[str] = "static-int8"
    summary: ClassVar[str] = "int8 weights + int8 activations with scales calibrated on text"
    requires: ClassVar[Requirements] = Requirements(packages=("torchao",), calibration=True)
    saveable: ClassVar[bool] = False
    exportable: ClassVar[bool] = False
    calibration_batches: int = 8
    calibration_tokens: int = 256
    per_channel: bool = True
    exclude: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        for field in ("calibration_batches", "calibration_tokens"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"static-int8 {field}={value!r} given; allowed: an integer ≥ 1")
        check_bool(self.per_channel, self.name, "per_channel")
        object.__setattr__(self, "exclude", as_patterns(self.exclude, self.name))


@handler(StaticInt8Config)
def apply_static_int8(model: Any, config: StaticInt8Config, context: PassContext) -> Applied:
    batches, source = calibration_batches(model, config, context)
    converted = conv1d_to_linear(model)
    selected, skipped = select_linears(model, config.exclude)
    ranges = observe_ranges(model, selected, batches)
    for name in [n for n in selected if n not in ranges]:
        skipped[name] = "never called on the calibration data, so it has no activation range"
        del selected[name]
    notes = conv1d_note(converted) + untie(model, list(selected))
    _quantize(selected, ranges, config.per_channel)
    tokens = sum(b.numel() for b in batches)
    widest = max(ranges, key=lambda n: ranges[n], default=None)
    notes.append(f"calibrated on {len(batches)} batches ({tokens} tokens) from {source}")
    if context.calibration is not None:
        notes.append("a saved recipe re-applied on load calibrates on the corpus, not on this data")
    if widest is not None:
        notes.append(f"widest activation range: {widest} (|x| ≤ {ranges[widest]:.3g}); one scale per layer")
    notes += [
        "torchao Int8StaticActivationInt8WeightConfig: slower than fp32 in eager mode, compose with compile",
        int8_gemm_note(),
    ]
    return Applied(model, touched=list(selected), skipped=skipped, notes=notes)


def calibration_batches(model: Any, config: StaticInt8Config, context: PassContext) -> tuple[list[Any], str]:
    """The caller's calibration batches (at most ``calibration_batches``), or corpus windows.

    Returns:
        The ``(B, T)`` token-id batches and a description of where they came from.
    """
    if context.calibration is not None:
        batches = list(context.calibration())[: config.calibration_batches]
        if batches:
            return batches, "the caller's calibration data"
    vocab = model.config.vocab_size
    rows = make_prompts(
        context.tokenizer, vocab, config.calibration_batches, config.calibration_tokens, context.seed
    )  # (batches, tokens)
    source = f"the packaged corpus ({CORPUS})" if context.tokenizer is not None else "random token ids"
    return [row[None, :] for row in rows], source


def observe_ranges(model: Any, modules: dict[str, Any], batches: list[Any]) -> dict[str, float]:
    """Run the batches and record each module's largest absolute input value (an abs-max observer)."""
    ranges: dict[str, float] = {}

    def observer(name: str):
        def hook(module: Any, args: tuple[Any, ...]) -> None:
            ranges[name] = max(ranges.get(name, 0.0), float(args[0].detach().abs().amax()))

        return hook

    handles = [m.register_forward_pre_hook(observer(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                model(input_ids=batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return ranges


def _quantize(selected: dict[str, Any], ranges: dict[str, float], per_channel: bool) -> None:
    from torchao.quantization.granularity import PerRow, PerTensor
    from torchao.quantization.quant_api import Int8StaticActivationInt8WeightConfig

    weight_granularity = PerRow() if per_channel else PerTensor()
    for name, module in selected.items():
        scale = torch.tensor(max(ranges[name], 1e-8) / 127.0).reshape(1, 1, 1)  # symmetric, (B, T, C) input
        ao_config = Int8StaticActivationInt8WeightConfig(
            act_quant_scale=scale, granularity=[PerTensor(), weight_granularity], set_inductor_config=False
        )
        ao_quantize(module, ao_config)
        # torchao wants the activation scale to have the input's rank; decoder layers feed (B, T, C)
        module.register_forward_pre_hook(_as_rank3)
        module.register_forward_hook(_restore_rank)


def _as_rank3(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0]
    if x.dim() == 3:
        return None
    module._unbottle_lead_shape = x.shape[:-1]
    return (x.reshape(1, -1, x.shape[-1]), *args[1:])


def _restore_rank(module: Any, args: tuple[Any, ...], output: Any) -> Any:
    lead = module.__dict__.pop("_unbottle_lead_shape", None)
    return None if lead is None else output.reshape(*lead, output.shape[-1])
