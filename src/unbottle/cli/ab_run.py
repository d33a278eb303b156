"""The work behind ``unbottle ab``: load, run interleaved rounds, evaluate, compare, store, print."""

from __future__ import annotations

from typing import Any


def run_ab_command(
    model_a: str, model_b: str, config: Any, eval_config: Any, goals: list[Any], quiet: bool, json_: bool
) -> dict[str, Any]:
    """Run and store one A/B comparison; print it; return its comparison document."""
    from unbottle.benchmarking import apply_threads
    from unbottle.cli.common import recorded_run
    from unbottle.cli.progress import Progress
    from unbottle.cli.show import show_run
    from unbottle.comparison.ab import run_ab
    from unbottle.comparison.noise import lookup_noise_floor, noise_key
    from unbottle.comparison.speed import compare_rounds
    from unbottle.core.env import manifest
    from unbottle.sources import resolve
    from unbottle.store import Store

    a_vs_a = model_a == model_b
    src_a = resolve(model_a)
    src_b = src_a if a_vs_a else resolve(model_b)
    threads = apply_threads(config.threads)
    store = Store()
    key = noise_key(config.to_dict(), threads["torch_num_threads"])
    floor = None if a_vs_a else lookup_noise_floor(store, key)
    with Progress(quiet) as progress:
        progress.message(f"loading A: {src_a.describe()} …")
        loaded_a = src_a.load()
        loaded_b = loaded_a
        if not a_vs_a:
            progress.message(f"loading B: {src_b.describe()} …")
            loaded_b = src_b.load()
        run_config = {
            "model_a": model_a,
            "model_b": model_b,
            "ab": config.to_dict(),
            "eval": eval_config.to_dict() if eval_config else None,
            "goals": [g.to_dict() for g in goals],
        }
        with recorded_run(
            store, "ab", f"{model_a} vs {model_b}", run_config, manifest(seed=config.seed)
        ) as run_id:
            bar = progress.task(f"A/B {config.scenario}", config.rounds, "rounds")
            rounds = run_ab(loaded_a, loaded_b, config, progress=lambda _label, done, _s: bar.update(done))
            for m in rounds.to_measurements():
                store.add_measurement(run_id, m)
            comparisons = compare_rounds(rounds, floor[0] if floor else None)
            extra = _eval_part(loaded_a, loaded_b, eval_config, comparisons, store, run_id, progress)
    doc = _document(comparisons, goals, model_a, model_b, a_vs_a, key, floor, rounds.order, extra)
    result = {
        "comparison": doc,
        "a_vs_a": a_vs_a,
        "noise_key": key,
        "model": loaded_a.info.to_dict(),
        "model_b": loaded_b.info.to_dict(),
        "threads": threads,
        "order": rounds.order,
        "noise_floor_pct": doc.get("noise_floor_pct"),
        **extra.get("stored", {}),
    }
    store.finish_run(run_id, "complete", result=result)
    show_run(store, run_id, json_)
    return doc


def _document(comparisons, goals, model_a, model_b, a_vs_a, key, floor, order, extra) -> dict[str, Any]:
    from unbottle.comparison.document import comparison_document
    from unbottle.comparison.noise import noise_floor_from

    more: dict[str, Any] = {"a_vs_a": a_vs_a, "noise_key": key, "order": order}
    if a_vs_a:
        more["noise_floor_pct"] = noise_floor_from({k: v for k, v in comparisons.items() if "." in k})
    elif floor:
        more["noise_floor_run"] = floor[1]
    if extra.get("agreement"):
        more["agreement"] = extra["agreement"]
    return comparison_document(comparisons, goals, model_a, model_b, **more)


def _eval_part(loaded_a, loaded_b, eval_config, comparisons, store, run_id, progress) -> dict[str, Any]:
    """With --eval: evaluate both on the same samples, add paired accuracy comparisons in place."""
    if eval_config is None:
        return {}
    from unbottle.comparison.accuracy import compare_evals
    from unbottle.evaluation import evaluate
    from unbottle.reporting.evals import eval_entry

    progress.message("evaluating A …")
    evals_a = evaluate(loaded_a, eval_config, progress=progress.evaluations("A: "))
    progress.message("evaluating B (with A as the agreement reference) …")
    evals_b = evaluate(loaded_b, eval_config, loaded_a, progress=progress.evaluations("B: "))
    for side, results in (("A", evals_a), ("B", evals_b)):
        for r in results:
            m = r.to_measurement()
            m.params = {**m.params, "side": side}
            store.add_measurement(run_id, m)
    comparisons.update(compare_evals(evals_a, evals_b))
    agreement = [eval_entry(r) for r in evals_b if r.evaluator == "agreement"]
    return {
        "agreement": agreement,
        "stored": {"evals_a": [r.to_dict() for r in evals_a], "evals_b": [r.to_dict() for r in evals_b]},
    }
