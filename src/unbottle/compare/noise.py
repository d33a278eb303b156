"""The noise floor: how far apart two runs of the *same* model land on this machine.

An A-vs-A run (``unbottle ab X X``) is stored like any A/B run, marked ``a_vs_a``. Later A/B runs
with the same scenario settings on the same host look up the latest one and report a speed
difference whose whole CI lies inside it as noise, not as a speed-up.
"""

from __future__ import annotations

import socket
from typing import Any

# ABConfig fields that must match for a noise floor to apply.
NOISE_KEY_FIELDS = ("scenario", "batch_size", "prompt_length", "new_tokens", "repeats_per_round")


def noise_key(config: dict[str, Any], threads: int) -> dict[str, Any]:
    return {**{k: config.get(k) for k in NOISE_KEY_FIELDS}, "threads": threads}


def noise_floor_from(comparisons: dict[str, Any]) -> dict[str, float]:
    """Per metric: the largest |% difference| inside the A-vs-A CI."""
    return {name: max(abs(c.pct.ci_low), abs(c.pct.ci_high)) for name, c in comparisons.items()}


def lookup_noise_floor(store: Any, key: dict[str, Any]) -> tuple[dict[str, float], int] | None:
    """The latest A-vs-A noise floor on this host for these settings, with its run id, or None."""
    host = socket.gethostname()
    for run in store.list_runs(limit=None, kind="ab"):
        result = run.result or {}
        if (
            run.status == "complete"
            and run.host == host
            and result.get("a_vs_a")
            and result.get("noise_key") == key
            and result.get("noise_floor_pct")
        ):
            return result["noise_floor_pct"], run.id
    return None
