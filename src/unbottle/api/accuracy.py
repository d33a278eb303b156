"""``unbottle.evaluate``: perplexity, multiple-choice accuracy and agreement, scored per sample."""

from __future__ import annotations

from typing import Any

from unbottle.api._common import Silent, config_of, document, store_of
from unbottle.benchmarking import apply_threads
from unbottle.evaluation import EvalConfig
from unbottle.evaluation import evaluate as run_evaluations
from unbottle.models import resolve


def evaluate(
    model: str = "smollm2-135m",
    config: Any = None,
    *,
    threads: int | None = None,
    store: Any = None,
    progress: Any = None,
    allow_pickle: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Evaluate ``model`` and record the run; return its document (what ``eval --json`` prints).

    Args:
        model: as ``bench``.
        config: an ``evaluation.EvalConfig``; or its fields as keyword arguments (``eval_tokens=4096``,
            ``task="sports_understanding"``, ``reference="smollm2-135m"``, ...).
        threads: torch threads; default the physical cores.
        store, progress, allow_pickle: as ``bench``.
    """
    config = config_of(EvalConfig, config, settings)
    progress = progress or Silent()
    store = store_of(store)
    source = resolve(model, allow_pickle=allow_pickle)
    ref_source = resolve(config.reference, allow_pickle=allow_pickle) if config.reference else None
    threads_in_force = apply_threads(threads)
    progress.message(f"loading {source.describe()} …")
    loaded = source.load()
    ref = ref_source.load() if ref_source else None
    with store.recording("eval", model, config.to_dict()) as run:
        progress.message("evaluating …")
        results = run_evaluations(loaded, config, ref, progress=progress.evaluations())
        for r in results:
            run.add(r.to_measurement())
        run.complete(
            {
                "model": loaded.info.to_dict(),
                "threads": threads_in_force,
                "evals": [r.to_dict() for r in results],
                "notes": loaded.info.notes,
            }
        )
    return document(store, run.id)
