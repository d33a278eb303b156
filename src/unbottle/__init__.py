"""unbottle: find and remove the performance bottlenecks of transformer models.

Public verbs are imported lazily so that ``import unbottle`` stays cheap (no torch import).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "load": "unbottle.sources:load",
    "resolve": "unbottle.sources:resolve",
    "benchmark": "unbottle.bench:benchmark",
    "manifest": "unbottle.core.env:manifest",
}

__all__ = ["__version__", *_VERBS]


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        import importlib

        module, _, attr = _VERBS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'unbottle' has no attribute {name!r}")
