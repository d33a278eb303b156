"""Per-layer sensitivity to a quantization: which layers to keep in higher precision first.

For every ``nn.Linear`` the inputs it sees on calibration text are recorded on the float model;
each layer's quantized counterpart is run on the same inputs, and its sensitivity is the relative
output error ``||y_q - y||² / ||y||²``. This is the per-op error that accuracy-aware tuners (Intel
Neural Compressor's MSE strategy, NNCF) rank layers by; it needs one forward pass and one call per
layer, where quantizing one layer at a time and re-measuring perplexity would need hundreds.

Torch passes are measured by applying the pass itself (with nothing excluded). ONNX Runtime's
block quantizers are simulated exactly: round-to-nearest per block of ``block_size`` input weights,
asymmetric with a zero point unless symmetric, as ``MatMulNBits`` stores them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from unbottle.data.prompts import make_prompts
from unbottle.passes import apply_, block_quant
from unbottle.passes.base import PassConfig, linear_layers
from unbottle.passes.registry import config_class
from unbottle.sources.gguf_blocks import dequantize

CALIBRATION_ROWS = 2
CALIBRATION_LENGTH = 128


def layer_sensitivity(loaded: Any, configs: list[PassConfig], seed: int = 0) -> tuple[dict[str, float], str]:
    """``({layer name: relative output error}, how it was measured)`` for the last quantizing pass.

    Passes before it that run in torch are applied first, so the layers are measured as they will
    be quantized. Returns ``({}, reason)`` when no pass in ``configs`` quantizes weights.
    """
    idx, proxy = _proxy(configs)
    if proxy is None:
        return {}, "no pass here quantizes weights"
    prefix = [c for c in configs[:idx] if c.stage == "torch"]
    if prefix:
        loaded, _ = apply_(loaded, prefix, copy_model=False)
    inputs = _capture_inputs(loaded, seed)
    if isinstance(proxy, tuple) and proxy[0] == "blocks":
        return _simulated_formats(loaded.model, inputs, proxy[1], proxy[2]), f"simulated {proxy[1]} blocks"
    if isinstance(proxy, tuple):
        scores = _simulated(loaded.model, inputs, *proxy)
        return scores, f"simulated {proxy[0]}-bit blocks of {proxy[1]} ({'sym' if proxy[2] else 'asym'})"
    quantized, _ = apply_(loaded, [proxy])
    return _compared(loaded.model, quantized.model, inputs), f"applied {proxy.label()}"


def _proxy(configs: list[PassConfig]) -> tuple[int, Any]:
    for i in reversed(range(len(configs))):
        c = configs[i]
        if c.name == "genai":
            if c.weights == "blocks":
                return i, ("blocks", c.block_format, c.output_format)
            continue
        if c.name == "onnx":
            if c.quantize in ("int8-block", "int4-block"):
                return i, (8 if c.quantize == "int8-block" else 4, c.block_size, c.symmetric)
            if c.quantize == "int8-dynamic":
                return i, config_class("dynamic-int8")(exclude=())
        elif hasattr(c, "exclude"):
            return i, dataclasses.replace(c, exclude=())
    return -1, None


def _capture_inputs(loaded: Any, seed: int) -> dict[str, Any]:
    model = loaded.model
    ids = make_prompts(
        loaded.tokenizer, model.config.vocab_size, CALIBRATION_ROWS, CALIBRATION_LENGTH, seed + 7
    )
    inputs: dict[str, Any] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda _m, args, name=name: inputs.setdefault(name, args[0].detach())
        )
        for name, module in linear_layers(model).items()
    ]
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    return inputs


def _relative_error(y: Any, yq: Any) -> float:
    y, yq = y.float(), yq.float()
    return float(((yq - y) ** 2).sum() / (y**2).sum().clamp_min(1e-30))


def _compared(model: Any, quantized: Any, inputs: dict[str, Any]) -> dict[str, float]:
    scores = {}
    with torch.no_grad():
        for name, module in linear_layers(model).items():
            if name not in inputs:
                continue
            try:
                other = quantized.get_submodule(name)
                x = inputs[name]
                scores[name] = _relative_error(module(x), other(x.to(_dtype_of(other, x.dtype))))
            except (AttributeError, RuntimeError, TypeError):
                continue  # a layer the pass replaced by something that isn't called alone
    return scores


def _dtype_of(module: Any, default: Any) -> Any:
    weight = getattr(module, "weight", None)
    dtype = getattr(weight, "dtype", default)
    return dtype if dtype.is_floating_point else default


def _simulated(
    model: Any, inputs: dict[str, Any], bits: int, block: int, symmetric: bool
) -> dict[str, float]:

    scores = {}
    with torch.no_grad():
        for name, module in linear_layers(model).items():
            if name in inputs and module.in_features % block == 0:
                w = fake_quantize_blocks(module.weight, bits, block, symmetric)
                x = inputs[name]
                scores[name] = _relative_error(module(x), torch.nn.functional.linear(x, w, module.bias))
    return scores


def _simulated_formats(model: Any, inputs: dict[str, Any], fmt: str, output_fmt: str) -> dict[str, float]:
    """Each layer's error with its weight in llama.cpp block format ``fmt`` (``output_fmt`` for the
    output layer), searched under the importance of the very inputs it is scored on, as the genai
    pass's weights=blocks computes it (``passes.block_quant``). An output layer already at q8_0 is
    left out: a fallback could not raise it."""
    output = model.get_output_embeddings()
    scores = {}
    with torch.no_grad():
        for name, module in linear_layers(model).items():
            if name not in inputs or module.in_features % block_quant.BLOCK:
                continue
            if module is output and output_fmt == "q8_0":
                continue  # already at the 8 bits a fallback would give it
            x = inputs[name]
            imp = (x.float().reshape(-1, x.shape[-1]) ** 2).mean(0).double().numpy()
            w = module.weight.detach().float().numpy()
            q = block_quant.quantize(w, output_fmt if module is output else fmt, imp)
            w_q = torch.from_numpy(dequantize(q)).to(x.dtype)
            scores[name] = _relative_error(module(x), torch.nn.functional.linear(x, w_q, module.bias))
    return scores


def fake_quantize_blocks(weight: Any, bits: int, block: int, symmetric: bool) -> Any:
    """Round-to-nearest quantize-dequantize of ``weight`` per block of ``block`` input weights."""
    out_f, in_f = weight.shape
    w = weight.detach().float().reshape(out_f, in_f // block, block)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (w.abs().amax(-1, keepdim=True) / qmax).clamp_min(1e-12)
        q = torch.clamp(torch.round(w / scale), -qmax - 1, qmax)
        return (q * scale).reshape(out_f, in_f)
    qmax = 2**bits - 1
    lo = w.amin(-1, keepdim=True).clamp(max=0)
    hi = w.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / qmax).clamp_min(1e-12)
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(w / scale) + zero, 0, qmax)
    return ((q - zero) * scale).reshape(out_f, in_f)
