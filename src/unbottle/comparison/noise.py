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


# An A-vs-A spread this many times the stored floor (and this many points above it) is not noise; with
# no floor stored, one above the absolute bound is not. The bound is loose on purpose: 3 decode rounds
# on a shared 2-core machine strayed 10-22% (tiny-llama, 1 thread) and 9-60% (smollm2-135m, 2 threads
# with a core taken), so the spread only catches gross disturbance; the CPU time other processes used
# (``unbottle.optimizer.host``) catches the rest.
DISTURBED_FACTOR = 3.0
DISTURBED_MARGIN_PCT = 10.0
DISTURBED_NO_FLOOR_PCT = 25.0


def disturbed_above(floor_pct: float | None) -> float:
    """The A-vs-A spread (largest |%| inside its CI, as ``noise_floor_from``) above which the machine
    was disturbed rather than noisy, given this host's stored floor for the metric (or None)."""
    if floor_pct is None:
        return DISTURBED_NO_FLOOR_PCT
    return max(DISTURBED_FACTOR * floor_pct, floor_pct + DISTURBED_MARGIN_PCT)
