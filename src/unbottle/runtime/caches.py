"""How a decode loop talks to a model's KV cache, whatever runs the model.

transformers renamed the forward's cache keyword (``past_key_values`` → ``cache``) and asks for
last-position logits with ``logits_to_keep``; a runtime may bring its own cache (GenAI's preallocated
buffers, the hybrid's bound ones: ``model.new_cache``), and the compile pass may ask for a static one
(``STATIC_CACHE_ATTR`` on the model). Benchmarks, the profiler and the runtimes all go through here.
"""

from __future__ import annotations

import inspect
from typing import Any

STATIC_CACHE_ATTR = "_unbottle_static_cache_len"


def forward_kwargs(model: Any) -> dict[str, Any]:
    """Ask for last-position logits only when the model supports it, as ``generate`` does."""
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def cache_keyword(model: Any) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``; use whichever the model takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache(model: Any, needed_len: int, batch: int = 1) -> Any:
    """The KV cache a decode loop should use: the runtime's own when it has one (``model.new_cache``,
    e.g. GenAI's preallocated buffers), static when the compile pass asked for one, else dynamic.

    A static cache attends over all its positions every step, so it is sized to the need, rounded up
    to the bucket: lengths within one bucket share a compiled graph.
    """
    from transformers import DynamicCache, StaticCache

    if callable(getattr(model, "new_cache", None)):
        return model.new_cache(needed_len, batch)

    bucket = getattr(model, STATIC_CACHE_ATTR, None)
    if bucket is None:
        return DynamicCache(config=model.config)
    size = -(-needed_len // bucket) * bucket
    return full_static_layers(StaticCache(config=model.config, max_cache_len=size), size)


def full_static_layers(cache: Any, size: int) -> Any:
    """``cache`` with its sliding-window layers (Mistral, Gemma 2/3) replaced by full static ones.

    transformers' static sliding layer counts positions in a Python int that torch.compile guards on,
    so every decode step recompiled (tiny-gemma3: 8 recompiles in 12 tokens, then eager). A full
    layer counts in a tensor; the model's masks still cut each sliding layer's window from the
    positions, so only the cache memory of those layers grows (to ``size`` positions).
    """
    from transformers.cache_utils import StaticLayer

    for i, layer in enumerate(cache.layers):
        if getattr(layer, "is_sliding", False):
            cache.layers[i] = StaticLayer(max_cache_len=size)
    return cache
