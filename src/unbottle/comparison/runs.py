"""Comparing two stored runs: two bench runs (unpaired samples) or two eval runs (paired samples).

Runs measured at different times cannot be paired by round, so bench samples are resampled
independently, one value per repeat (a decode repeat's per-step latencies move together, so they
count once, as their median); eval runs over the same windows/items pair sample by sample.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
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


def per_repeat(m: Measurement) -> list[float]:
    """A bench measurement as one value per repeat: decode's per-step latencies (``new_tokens - 1``
    per repeat, autocorrelated within it) become each repeat's median step; the other metrics
    already hold one value per repeat."""
    k = m.params.get("new_tokens")
    if m.name.endswith(".token_latency") and isinstance(k, int) and k > 2 and len(m.samples) % (k - 1) == 0:
        return [statistics.median(m.samples[i : i + k - 1]) for i in range(0, len(m.samples), k - 1)]
    return list(m.samples)


def compare_bench_runs(
    a: list[Measurement], b: list[Measurement], floor_of: Callable[[Measurement], float | None] | None = None
) -> dict[str, MetricComparison]:
    """Every scenario point both bench runs measured, per repeat and unpaired; ``floor_of`` gives a
    measurement's noise floor in percent (a stored A-vs-A of the same settings), or None."""
    ka, kb = metric_keys(a), metric_keys(b)
    common = [k for k in ka if k in kb]
    if not common:
        raise ConfigError(
            "the two bench runs share no scenario point (same scenario and parameters); "
            f"run both with the same {opt('prompt_lengths')}/{opt('batch_sizes')}/{opt('new_tokens')}"
        )
    values = {k: (per_repeat(ka[k]), per_repeat(kb[k])) for k in common}
    few = [k for k, (x, y) in values.items() if min(len(x), len(y)) < 2]
    if len(few) == len(common):
        raise ConfigError(
            f"the two bench runs hold fewer than 2 repeats per point ({', '.join(few)}); an interval needs "
            f"at least 2 on each side: bench both with {opt('min_repeats')} 5 or more"
        )
    return {
        k: compare_samples(
            k,
            ka[k].unit,
            ka[k].higher_is_better,
            x,
            y,
            paired=False,
            noise_floor_pct=floor_of(ka[k]) if floor_of else None,
        )  # fmt: skip
        for k, (x, y) in values.items()
        if k not in few
    }


# what must match for two eval runs' samples to pair: the same text, cut the same way, or the same task
_EVAL_PAIRING = ("corpus", "window", "stride", "eval_tokens", "task", "n_items", "subset_seed", "item_part")


def caveats(run_a: Any, run_b: Any) -> list[str]:
    """Why two stored runs' numbers may differ for reasons other than the models (shown beside the
    comparison): another CPU, host or thread count, other settings. Refused outright: a run with
    itself, and eval runs whose samples would not pair (another text, window or task).

    Raises:
        ConfigError: the same run twice, or eval runs that scored different samples.
    """
    if run_a.id == run_b.id:
        raise ConfigError(f"run {run_a.id} given twice; compare two different runs (e.g. `compare 3 4`)")
    if run_a.kind == run_b.kind == "eval":
        _check_pairable(run_a, run_b)
    found = []
    for what, get in (
        ("CPU", lambda r: (r.manifest.get("cpu") or {}).get("model")),
        ("host", lambda r: r.host),
        ("threads", lambda r: (r.manifest.get("threads") or {}).get("torch_num_threads")),
    ):
        if get(run_a) != get(run_b):
            found.append(f"{what} differs: {get(run_a)} (run {run_a.id}) vs {get(run_b)} (run {run_b.id})")
    settings = [k for k in sorted(set(run_a.config) | set(run_b.config))
                if k != "model" and run_a.config.get(k) != run_b.config.get(k)]  # fmt: skip
    if settings:
        found.append(f"settings differ: {', '.join(settings)}")
    return found


def _check_pairable(run_a: Any, run_b: Any) -> None:
    def pairing(run: Any) -> dict[str, Any]:
        evals = (run.result or {}).get("evals") or []
        return {e["evaluator"]: {k: e["details"].get(k) for k in _EVAL_PAIRING} for e in evals}

    a, b = pairing(run_a), pairing(run_b)
    for evaluator in sorted(set(a) & set(b)):
        differ = [k for k in _EVAL_PAIRING if a[evaluator][k] != b[evaluator][k]]
        if differ:
            shown = ", ".join(f"{k} {a[evaluator][k]!r} vs {b[evaluator][k]!r}" for k in differ)
            raise ConfigError(
                f"runs {run_a.id} and {run_b.id} scored different samples for {evaluator} ({shown}); "
                "their scores can't be paired: evaluate both models with the same text and settings, "
                f"or compare them in one run with `unbottle ab {run_a.model} {run_b.model} --eval`"
            )


def compare_stored(
    run_a: Any,
    ms_a: list[Measurement],
    run_b: Any,
    ms_b: list[Measurement],
    floor_of: Callable[[Measurement], float | None] | None = None,
):
    """MetricComparisons of two stored runs of the same kind (bench or eval)."""
    kinds = (run_a.kind, run_b.kind)
    if kinds == ("bench", "bench"):
        return compare_bench_runs(ms_a, ms_b, floor_of)
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
