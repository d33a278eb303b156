"""Is the machine quiet enough to measure on? A busy host is detected, not believed.

Another process holding a core the search's threads need can slow a baseline several-fold (a 2-thread
decode on a 2-core machine with one core taken: 1.9 instead of 10 tokens/s on one quiet thread), and
a search planned and judged on that number is wrong twice. The baseline worker counts the CPU time
other processes used while it ran (``HostLoad``); the search compares that with the cores its threads
need, and the baseline's A-vs-A spread with the noise floor stored for this host
(``unbottle.comparison.noise``), before it believes the baseline.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from unbottle.comparison.ab import ABConfig
from unbottle.comparison.noise import disturbed_above, lookup_noise_floor, noise_key
from unbottle.core.naming import given

LOAD_SLACK_CORES = 0.5  # other processes may use this much of the cores our threads need


class HostLoad:
    """Counts, while in a ``with`` block, the cores other processes kept busy.

    ``psutil.cpu_times`` is machine-wide (every CPU ``/proc/stat`` shows); this process's own CPU time
    (threads and children) is taken out, and the rest is scaled to the CPUs this process may run on,
    so a container on a large host counts its share, not the host's.
    """

    def __enter__(self) -> HostLoad:
        self._proc = psutil.Process()
        self._start = (time.perf_counter(), psutil.cpu_times(), self._proc.cpu_times())
        self.result: dict[str, Any] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, sys0, own0 = self._start
        wall, sys1, own1 = time.perf_counter() - wall0, psutil.cpu_times(), self._proc.cpu_times()
        total = _total(sys1) - _total(sys0)
        idle = (sys1.idle - sys0.idle) + (getattr(sys1, "iowait", 0.0) - getattr(sys0, "iowait", 0.0))
        own = sum(own1[:4]) - sum(own0[:4])  # user, system, children's user and system
        cpus = _usable_cpus()
        others = max(0.0, total - idle - own) / total * cpus if total > 0 else 0.0
        self.result = {
            "cpus": cpus,
            "others_cores": round(others, 2),
            "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "seconds": round(wall, 2),
        }


def _total(times: Any) -> float:
    """CPU seconds of every kind; Linux counts guest time inside user time already."""
    return sum(v for k, v in times._asdict().items() if k not in ("guest", "guest_nice"))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def disturbance(
    base: dict[str, Any], metric: str, threads: int, floor_pct: float | None
) -> dict[str, Any] | None:
    """Why the baseline ``base`` looks measured on a busy machine; None when nothing says so.

    Args:
        base: the baseline trial's result (``host``: ``HostLoad.result``; ``screen_noise_floor_pct``:
            the A-vs-A's largest |%| inside its CI, per metric).
        metric: the speed metric the search improves (its A-vs-A spread is checked).
        threads: torch threads the measurements used.
        floor_pct: the stored A-vs-A noise floor of ``metric`` for this host and settings, or None.
    """
    host = base.get("host") or {}
    reasons = []
    others, cpus = host.get("others_cores"), host.get("cpus")
    if others is not None and cpus and others > cpus - threads + LOAD_SLACK_CORES:
        reasons.append(
            f"other processes kept {others:.1f} of the {cpus} cores busy while it ran, leaving "
            f"{max(0.0, cpus - others):.1f} for its {threads} thread(s)"
        )
    spread = (base.get("screen_noise_floor_pct") or {}).get(metric)
    bound = disturbed_above(floor_pct)
    if spread is not None and spread > bound:
        against = (
            f"this host's stored noise floor is {floor_pct:.1f}%"
            if floor_pct is not None
            else f"more than {bound:.0f}% is not noise"
        )
        reasons.append(f"two runs of the same model differed by up to {spread:.0f}% ({against})")
    if not reasons:
        return None
    free = max(1, int(cpus - others)) if others is not None and cpus else None
    return {
        "reasons": reasons,
        "others_cores": others,
        "cpus": cpus,
        "threads": threads,
        "free_cores": free,
        "spread_pct": spread,
        "noise_floor_pct": floor_pct,
        "bound_pct": bound,
        "injected": host.get("injected"),
    }


def advice(busy: dict[str, Any], threads_fixed: bool) -> str:
    """What to do about a busy host, in one clause."""
    free = busy.get("free_cores")
    if free is not None and free < busy["threads"] and not threads_fixed:
        return f"re-run when the machine is quiet, or with {given('threads', free)} (the cores left free)"
    return "re-run when the machine is quiet"


def baseline_disturbance(store: Any, cfg: Any, base: dict[str, Any]) -> dict[str, Any] | None:
    """``disturbance`` of a search's baseline against this host's stored noise floor (speed objectives
    only: size and memory don't depend on a quiet machine)."""
    scenario = cfg.objective_spec()[0]
    if scenario is None:
        return None
    threads = base["threads"]["torch_num_threads"]
    metric = f"{scenario}.tokens_per_s"
    found = lookup_noise_floor(store, noise_key(ABConfig(**cfg.ab_settings("screen")).to_dict(), threads))
    floor = found[0].get(metric) if found else None
    return disturbance(base, metric, threads, floor)
