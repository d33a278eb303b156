"""Compilation: torch.compile (inductor) with a static KV cache for decoding.

Eager decoding of a small model on CPU spends much of each token in Python dispatch across ~30
layers of small ops. Compiling the forward fuses them into generated C++ kernels; a static cache
(fixed-size KV buffers) keeps shapes constant from step to step, so one compiled graph serves every
decode step instead of recompiling as the cache grows.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import shutil
from typing import Any, ClassVar, Literal

import torch

from unbottle.core.errors import ConfigError
from unbottle.passes.base import Applied, PassConfig, PassContext, Requirements, handler
from unbottle.runtime.caches import STATIC_CACHE_ATTR


@dataclasses.dataclass(frozen=True)
class CompileConfig(PassConfig):
    """torch.compile the model's forward; ``static_cache`` makes decoding use fixed-size KV buffers."""

    name: ClassVar[str] = "compile"
    stage: ClassVar[str] = "compile"  # type: ignore[misc]
    summary: ClassVar[str] = "torch.compile (inductor) with a static KV cache for decoding"
    requires: ClassVar[Requirements] = Requirements()
    saveable: ClassVar[bool] = False
    exportable: ClassVar[bool] = False
    mode: Literal["default", "max-autotune", "reduce-overhead"] = "default"
    static_cache: bool = True
    cache_bucket: int = 256
    dynamic: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("default", "max-autotune", "reduce-overhead"):
            raise ConfigError(
                f"compile mode {self.mode!r} given; allowed: default, max-autotune, reduce-overhead"
            )
        if self.cache_bucket < 16:
            raise ConfigError(f"compile cache_bucket {self.cache_bucket} given; allowed: 16 or more tokens")

    def missing(self) -> list[str]:
        if not torch.cuda.is_available() and not (shutil.which("g++") or shutil.which("c++")):
            return ["inductor on CPU needs a C++ compiler (g++); install it (e.g. apt-get install g++)"]
        return []


@handler(CompileConfig)
def apply_compile(model: Any, config: CompileConfig, context: PassContext) -> Applied:
    model.forward = with_positions(torch.compile(model.forward, mode=config.mode, dynamic=config.dynamic))
    notes = [f"torch.compile mode={config.mode}; the first call of each new input shape compiles (slow)"]
    if config.static_cache:
        setattr(model, STATIC_CACHE_ATTR, config.cache_bucket)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.cache_implementation = "static"
        notes.append(f"decoding uses a static KV cache sized in steps of {config.cache_bucket} positions")
    return Applied(model, touched=["forward"], notes=notes)


def with_positions(forward: Any) -> Any:
    """``forward`` given explicit position ids when a cached call brings neither positions nor a mask.

    OPT derives its positions from the cache length inside ``forward`` (``torch.ones(batch, past + T)``);
    with a static cache that length is a tensor, which torch.compile can't turn into a shape, so it
    broke the graph at every decode step (tiny-opt: 22 graphs for 14 tokens). Computed here, outside
    the compiled code, they are an ordinary input: ``past .. past + T - 1``, what every family computes
    itself for an unpadded batch.
    """
    if "position_ids" not in inspect.signature(forward).parameters:
        return forward

    @functools.wraps(forward)
    def call(*args: Any, **kwargs: Any) -> Any:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        ids = kwargs.get("input_ids")
        bare = kwargs.get("position_ids") is None and kwargs.get("attention_mask") is None
        if bare and cache is not None and ids is not None:
            steps = torch.arange(ids.shape[1], device=ids.device) + cache.get_seq_length()  # (T,)
            kwargs["position_ids"] = steps.unsqueeze(0).expand(ids.shape[0], -1)  # (B, T)
        return forward(*args, **kwargs)

    return call
