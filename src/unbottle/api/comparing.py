"""``unbottle.ab`` (interleaved A/B rounds, optionally accuracy too) and ``unbottle.compare`` (two
stored runs): each records a run whose document holds the comparison with its intervals and goals."""

from __future__ import annotations

from typing import Any

from unbottle.api._common import Silent, config_of, document, store_of
from unbottle.benchmarking import apply_threads
from unbottle.comparison.ab import ABConfig, run_ab
from unbottle.comparison.accuracy import compare_evals
from unbottle.comparison.document import comparison_document
from unbottle.comparison.noise import lookup_noise_floor, noise_floor_from, noise_key
from unbottle.comparison.runs import caveats, compare_stored
from unbottle.comparison.speed import compare_rounds, not_compared
from unbottle.core.env import manifest
from unbottle.core.errors import ConfigError
from unbottle.evaluation import evaluate
from unbottle.models import resolve
from unbottle.reporting.evals import eval_entry
from unbottle.stats import Goal


def ab(
    model_a: str,
    model_b: str,
    config: Any = None,
    *,
    eval: Any = None,  # noqa: A002 - the CLI's --eval, an EvalConfig
    goals: Any = (),
    store: Any = None,
    progress: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Run A and B in alternating rounds and record the run; return its document (``ab --json``).

    Args:
        model_a, model_b: baseline and candidate (as ``bench``); the same spec twice measures the
            A-vs-A noise floor, which later comparisons of the same settings report.
        config: a ``comparison.ab.ABConfig``; or its fields as keyword arguments (``rounds=10``, ...).
        eval: an ``EvalConfig`` to compare accuracy too, paired by sample; None: speed only.
        goals: ``stats.Goal`` objects or ``"METRIC:KIND=VALUE"`` strings.
        store, progress: as ``bench``.
    """
    config, goals = config_of(ABConfig, config, settings), _goals(goals)
    _check_goal_metrics(goals, config, eval)
    progress, store = progress or Silent(), store_of(store)
    a_vs_a = model_a == model_b and config.speculative is None  # speculation against plain is no A-vs-A
    sources = [resolve(model_a)] if a_vs_a else [resolve(model_a), resolve(model_b)]  # both, then load
    threads = apply_threads(config.threads)
    key = noise_key(config.to_dict(), threads["torch_num_threads"])
    floor = None if a_vs_a else lookup_noise_floor(store, key)
    loaded = []
    for name, source in zip("AB", sources, strict=False):
        progress.message(f"loading {name}: {source.describe()} …")
        loaded.append(source.load())
    loaded_a, loaded_b = loaded[0], loaded[-1]
    run_config = {"model_a": model_a, "model_b": model_b, "ab": config.to_dict(),
                  "eval": eval.to_dict() if eval else None,
                  "goals": [g.to_dict() for g in goals]}  # fmt: skip
    with store.recording("ab", f"{model_a} vs {model_b}", run_config, manifest(seed=config.seed)) as run:
        bar = progress.task(f"A/B {config.scenario}", config.rounds, "rounds")
        rounds = run_ab(loaded_a, loaded_b, config, progress=lambda _label, done, _s: bar.update(done))
        for m in rounds.to_measurements():
            run.add(m)
        comparisons = compare_rounds(rounds, floor[0] if floor else None)
        extra = _eval_part(loaded_a, loaded_b, eval, comparisons, run, progress)
        doc = _document(comparisons, goals, model_a, model_b, a_vs_a, key, floor, rounds.order, extra)
        if rounds.speculation:
            doc["speculation"] = rounds.speculation
        zero = not_compared(rounds)  # zero in some round (goodput): medians, no ratio
        if zero:
            doc["not_compared"] = zero
        stored = {"comparison": doc, "a_vs_a": a_vs_a, "noise_key": key, "model": loaded_a.info.to_dict(),
                  "model_b": loaded_b.info.to_dict(), "threads": threads, "order": rounds.order,
                  "noise_floor_pct": doc.get("noise_floor_pct"),
                  "speculation": rounds.speculation}  # fmt: skip
        run.complete({**stored, **extra.get("stored", {})})
    return document(store, run.id)


def compare(run_a: int | str, run_b: int | str, *, goals: Any = (), store: Any = None) -> dict[str, Any]:
    """Compare two stored bench runs (unpaired) or eval runs (paired by sample) and record the result;
    return its document (``compare --json``). ``run_a``/``run_b``: ids or ``"last"``."""
    goals, store = _goals(goals), store_of(store)
    a, b = store.get_run(run_a), store.get_run(run_b)
    noted = caveats(a, b)
    comparisons = compare_stored(a, store.measurements(a.id), b, store.measurements(b.id), _floors(store, a))
    doc = comparison_document(
        comparisons, goals, f"run {a.id} ({a.model})", f"run {b.id} ({b.model})", runs=[a.id, b.id],
        caveats=noted,
    )  # fmt: skip
    config = {"runs": [a.id, b.id], "goals": [g.to_dict() for g in goals]}
    with store.recording("compare", f"{a.model} vs {b.model}", config) as run:
        run.complete({"comparison": doc})
    return document(store, run.id)


def _floors(store: Any, run: Any) -> Any:
    """A bench measurement's noise floor: the latest A-vs-A on this host with its scenario's settings
    and the run's threads (``unbottle ab X X``), or None. Runs at different times vary more than
    interleaved rounds do, so this is the least a difference must exceed, not a guarantee."""
    threads = (run.manifest.get("threads") or {}).get("torch_num_threads")

    def floor_of(m: Any) -> float | None:
        settings = {"scenario": m.scenario, "repeats_per_round": 1, **m.params}
        found = lookup_noise_floor(store, noise_key(settings, threads))
        return None if found is None else found[0].get(m.name)

    return floor_of


def _goals(goals: Any) -> list[Any]:
    return [g if isinstance(g, Goal) else Goal.parse(g) for g in goals or ()]


def _check_goal_metrics(goals: list[Any], config: Any, eval_config: Any) -> None:
    """Every goal names a metric this comparison measures (before anything loads)."""
    known = config.metric_names()
    if eval_config is not None:
        known += ["perplexity"] + (["accuracy"] if eval_config.task else [])
    for g in goals:
        if g.metric not in known:
            raise ConfigError(
                f"goal names unknown metric {g.metric!r}; metrics in this comparison: "
                f"{', '.join(known)}" + ("" if eval_config else " (add --eval for accuracy metrics)")
            )


def _document(comparisons, goals, model_a, model_b, a_vs_a, key, floor, order, extra) -> dict[str, Any]:
    more: dict[str, Any] = {"a_vs_a": a_vs_a, "noise_key": key, "order": order}
    if a_vs_a:
        more["noise_floor_pct"] = noise_floor_from({k: v for k, v in comparisons.items() if "." in k})
    elif floor:
        more["noise_floor_run"] = floor[1]
    if extra.get("agreement"):
        more["agreement"] = extra["agreement"]
    return comparison_document(comparisons, goals, model_a, model_b, **more)


def _eval_part(loaded_a, loaded_b, eval_config, comparisons, run, progress) -> dict[str, Any]:
    """With an eval config: evaluate both on the same samples, add paired accuracy comparisons in place."""
    if eval_config is None:
        return {}

    progress.message("evaluating A …")
    own = loaded_a if loaded_a.info.task != "causal-lm" else None  # an encoder: its own reference
    evals_a = evaluate(loaded_a, eval_config, own, progress=progress.evaluations("A: "))
    progress.message("evaluating B (with A as the agreement reference) …")
    evals_b = evaluate(loaded_b, eval_config, loaded_a, progress=progress.evaluations("B: "))
    for side, results in (("A", evals_a), ("B", evals_b)):
        for r in results:
            m = r.to_measurement()
            m.params = {**m.params, "side": side}
            run.add(m)
    comparisons.update(compare_evals(evals_a, evals_b))
    agreement = [eval_entry(r) for r in evals_b if r.evaluator == "agreement"]
    return {
        "agreement": agreement,
        "stored": {"evals_a": [r.to_dict() for r in evals_a], "evals_b": [r.to_dict() for r in evals_b]},
    }
