"""unbottle: find and remove the performance bottlenecks of transformer models.

The verbs (``optimize``, ``profile``, ``bench``, ``evaluate``, ``ab``, ``compare``, ``report``,
``apply``, ``train``, ``distill``) record their runs in the store exactly as the CLI does and return
the document its ``--json`` prints (``progress=unbottle.reporting.progress.Progress()`` draws bars);
the building blocks beneath them (``load``, ``benchmark``, ``apply_``, ``run_ab``, ...) record nothing.
Everything is imported lazily so that ``import unbottle`` stays cheap (no torch import).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# torchao (imported by transformers when installed) warns about CUDA-only kernels it cannot load on
# CPU, and torch's pytree logs a deprecation for torchao's enums: noise on every load, not news.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

_VERBS = {
    "optimize": "unbottle.api:optimize",
    "profile": "unbottle.api:profile",
    "bench": "unbottle.api:bench",
    "evaluate": "unbottle.api:evaluate",
    "ab": "unbottle.api:ab",
    "compare": "unbottle.api:compare",
    "report": "unbottle.api:report",
    "export_runs": "unbottle.api:export_runs",
    "apply": "unbottle.api:apply",
    "train": "unbottle.api:train",
    "distill": "unbottle.api:distill",
    "load": "unbottle.models:load",
    "resolve": "unbottle.models:resolve",
    "benchmark": "unbottle.benchmarking:benchmark",
    "apply_": "unbottle.passes:apply_",
    "parse_pass": "unbottle.passes:parse_pass",
    "run_ab": "unbottle.comparison.ab:run_ab",
    "manifest": "unbottle.core.env:manifest",
}

__all__ = ["__version__", *_VERBS]


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        module, _, attr = _VERBS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'unbottle' has no attribute {name!r}")
