"""Quantization passes for ``nn.Linear``: fewer bytes per weight, and int8 arithmetic where it pays.

Decode reads every weight once per token, so bytes per weight set its speed on CPU. Four passes,
each a config plus a handler in its own module:

- ``dynamic-int8`` (``quantize_dynamic``): int8 weights and activations quantized at run time.
- ``wo-int8`` (``quantize_int8``): int8 weights, float activations; the accurate one.
- ``wo-int4`` (``quantize_int4``): group-wise int4 weights, bf16 compute.
- ``static-int8`` (``quantize_static``): int8 weights and activations, scales from calibration.

Measured on smollm2-135m (1024 tokens of the packaged corpus): per-tensor dynamic activations
cost +200% perplexity (outlier channels), per-token dynamic +2%, weight-only int8 nothing
measurable, int4 +34% at group 64 but +0.2% at group 32 asymmetric (the packaged weights come
from a Q4_1 GGUF, whose grid that scheme reproduces).

Results are tensor subclasses or custom modules, so they are not saved as weights: the recipe is
re-applied on load.
"""

from unbottle.passes.quantize_dynamic import DynamicInt8Config
from unbottle.passes.quantize_int4 import WeightOnlyInt4Config
from unbottle.passes.quantize_int8 import WeightOnlyInt8Config
from unbottle.passes.quantize_static import StaticInt8Config

__all__ = ["DynamicInt8Config", "StaticInt8Config", "WeightOnlyInt4Config", "WeightOnlyInt8Config"]
