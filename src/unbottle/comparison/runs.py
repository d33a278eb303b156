"""Comparing two stored runs: two bench runs (unpaired samples) or two eval runs (paired samples).

Runs measured at different times cannot be paired by round, so bench samples are resampled
independently; eval runs over the same windows/items pair sample by sample.
"""

from __future__ import annotations

from typing import Any

from unbottle.comparison.ab import ABConfig, ABRounds
from unbottle.comparison.accuracy import compare_evals
from unbottle.comparison.speed import compare_rounds, compare_samples
from unbottle.core.errors import ConfigError
from unbottle.core.measurement import Measurement
from unbottle.core.naming import opt
from unbottle.evaluation import EvalResult
from unbottle.stats import MetricComparison

SPEED_PREFIXES = ("prefill.", "decode.", "generate.")


def metric_keys(measurements: list[Measurement]) -> dict[str, Measurement]:
    """Key each speed measurement by name, plus ``@param-value`` for params that vary within the name.

    Keys avoid spaces, ``:`` and ``=`` so goals can name them (``decode.tokens_per_s@batch_size-4``).
    """
    speed = [m for m in measurements if m.name.startswith(SPEED_PREFIXES) and len(m.samples) >= 2]
    out: dict[str, Measurement] = {}
    for m in speed:
        same = [o for o in speed if o.name == m.name]
        varying = sorted(k for k in m.params if len({str(o.params.get(k)) for o in same}) > 1)
        key = m.name + ("@" + ",".join(f"{k}-{m.params[k]}" for k in varying) if varying else "")
        out[key] = m
    return out


def compare_bench_runs(a: list[Measurement], b: list[Measurement]) -> dict[str, MetricComparison]:
    ka, kb = metric_keys(a), metric_keys(b)
    common = [k for k in ka if k in kb]
    if not common:
        raise ConfigError(
            "the two bench runs share no scenario point (same scenario and parameters); "
            f"run both with the same {opt('prompt_lengths')}/{opt('batch_sizes')}/{opt('new_tokens')}"
        )
    return {
        k: compare_samples(k, ka[k].unit, ka[k].higher_is_better, ka[k].samples, kb[k].samples, paired=False)
        for k in common
    }


def compare_stored(run_a: Any, ms_a: list[Measurement], run_b: Any, ms_b: list[Measurement]):
    """MetricComparisons of two stored runs of the same kind (bench or eval)."""
    kinds = (run_a.kind, run_b.kind)
    if kinds == ("bench", "bench"):
        return compare_bench_runs(ms_a, ms_b)
    if kinds == ("eval", "eval"):

        def evals(run):
            return [EvalResult.from_dict(e) for e in (run.result or {}).get("evals", [])]

        return compare_evals(evals(run_a), evals(run_b))
    raise ConfigError(
        f"runs {run_a.id} ({run_a.kind}) and {run_b.id} ({run_b.kind}) given; `unbottle compare` "
        "compares two bench runs or two eval runs"
    )


def recompute_ab(run: Any, measurements: list[Measurement]) -> dict[str, MetricComparison]:
    """Recompute a stored ``ab`` run's comparisons from its stored inputs alone.

    Uses the per-round values, the per-sample evaluation scores and the noise floor the run used;
    the bootstrap is seeded, so the result equals what the run reported.
    """
    result = run.result or {}
    config = ABConfig.from_dict(run.config["ab"])
    rounds = ABRounds.from_measurements(config, measurements, result.get("order", []))
    floors = {
        k: v["noise_floor_pct"]
        for k, v in result["comparison"]["metrics"].items()
        if v.get("noise_floor_pct") is not None
    }
    comparisons = compare_rounds(rounds, floors or None)
    if result.get("evals_a"):
        evals_a = [EvalResult.from_dict(e) for e in result["evals_a"]]
        evals_b = [EvalResult.from_dict(e) for e in result["evals_b"]]
        comparisons.update(compare_evals(evals_a, evals_b))
    return comparisons
