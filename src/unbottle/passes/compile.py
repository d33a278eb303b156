"""Compilation: torch.compile (inductor) with a static KV cache for decoding.

Eager decoding of a small model on CPU spends much of each token in Python dispatch across ~30
layers of small ops. Compiling the forward fuses them into generated C++ kernels; a static cache
(fixed-size KV buffers) keeps shapes constant from step to step, so one compiled graph serves every
decode step instead of recompiling as the cache grows.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any, ClassVar, Literal

from unbottle.core.errors import ConfigError
from unbottle.passes.base import Applied, PassConfig, PassContext, Requirements, handler

STATIC_CACHE_ATTR = "_unbottle_static_cache_len"


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
        import torch

        if not torch.cuda.is_available() and not (shutil.which("g++") or shutil.which("c++")):
            return ["inductor on CPU needs a C++ compiler (g++); install it (e.g. apt-get install g++)"]
        return []


@handler(CompileConfig)
def apply_compile(model: Any, config: CompileConfig, context: PassContext) -> Applied:
    import torch

    model.forward = torch.compile(model.forward, mode=config.mode, dynamic=config.dynamic)
    notes = [f"torch.compile mode={config.mode}; the first call of each new input shape compiles (slow)"]
    if config.static_cache:
        setattr(model, STATIC_CACHE_ATTR, config.cache_bucket)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.cache_implementation = "static"
        notes.append(f"decoding uses a static KV cache sized in steps of {config.cache_bucket} positions")
    return Applied(model, touched=["forward"], notes=notes)


def new_cache(model: Any, needed_len: int) -> Any:
    """The KV cache a decode loop should use: static when the compile pass asked for one.

    A static cache attends over all its positions every step, so it is sized to the need, rounded up
    to the bucket: lengths within one bucket share a compiled graph.
    """
    from transformers import DynamicCache, StaticCache

    bucket = getattr(model, STATIC_CACHE_ATTR, None)
    if bucket is None:
        return DynamicCache(config=model.config)
    return StaticCache(config=model.config, max_cache_len=-(-needed_len // bucket) * bucket)
