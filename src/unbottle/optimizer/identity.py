"""What a search's recorded trials are valid for: beyond its settings, the model's bytes, the
libraries that ran it and the machine with its threads.

The search key is ``<settings key>-<circumstances digest>``: the same command on the same model bytes,
library versions, CPU and thread count resumes; change any of them and the trials are measured afresh,
and the search says what changed (the earlier search's circumstances are recorded as its ``identity``
trial, which is never a measurement).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from unbottle import __version__
from unbottle.core.env import cpu_info, library_versions, physical_cores
from unbottle.models import resolve

IDENTITY = "identity"  # the trial key under which a search records its circumstances
# what a trial records and means; raised when that changes, so older trials are not read as newer ones
# (2: the baseline also scores the held-out part, and the verification is scored on it; 3: verification
# speed in two time blocks, memory from a fresh process, a task's items split into selection/held-out)
TRIAL_FORMAT = 3
LIBRARIES = ("torch", "transformers", "onnxruntime", "onnxruntime-genai", "torchao", "gguf")


def circumstances(model: str, threads: int | None) -> dict[str, Any]:
    """What the measurements of a search on ``model`` depend on besides its settings."""
    versions = library_versions()
    return {
        "model_bytes": resolve(model).fingerprint(),
        "trial_format": TRIAL_FORMAT,
        "unbottle": __version__,
        **{name: versions.get(name) for name in LIBRARIES},
        "cpu": cpu_info().get("model"),
        "threads": threads if threads is not None else physical_cores(),
    }


def digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def what_changed(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Each circumstance that differs, as ``onnxruntime 1.30.0 → 1.31.0`` (``the model's bytes``)."""
    changed = []
    for name in sorted(set(before) | set(now)):
        if before.get(name) != now.get(name):
            if name == "model_bytes":
                changed.append("the model's bytes")
            else:
                changed.append(f"{name} {before.get(name)} → {now.get(name)}")
    return changed


def superseded(store: Any, settings_key: str, key: str, now: dict[str, Any]) -> list[str]:
    """What changed since the latest earlier search of the same settings under other circumstances
    (empty when there is none, or it recorded no identity)."""
    earlier = [k for k in store.search_keys(settings_key + "-") if k != key]
    for other in reversed(earlier):
        recorded = store.trials(other).get(IDENTITY)
        if recorded is not None:
            return what_changed(recorded["circumstances"], now)
    return []
