"""``unbottle.optimize``: baseline → candidates under an accuracy guard → the verified winner, saved.

The time budget starts with the search's clock, after the model caches are filled (which it does
not count; see ``unbottle.optimizer.prepare``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from unbottle.api._common import config_of, document, store_of
from unbottle.comparison.ab import ABConfig, ABRounds
from unbottle.core.env import manifest
from unbottle.core.errors import UnbottleError
from unbottle.evaluation.corpus import load_text
from unbottle.evaluation.tasks import load_task
from unbottle.models import resolve
from unbottle.optimizer.config import OptimizeConfig, parse_duration, parse_workload
from unbottle.optimizer.prepare import with_model_task
from unbottle.optimizer.search import Search
from unbottle.reporting.output import write_report


def optimize(
    model: str = "smollm2-135m",
    config: Any = None,
    *,
    time_budget: str | float | None = None,
    workload: str | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    save_closest: bool = False,
    report: bool = True,
    store: Any = None,
    log: Callable[[str], None] | None = None,
    on_clock_start: Callable[[], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Search for the fastest variant of ``model`` that keeps accuracy, verify it by A/B test, save it;
    record the run and return its document (what ``optimize --json`` prints). Calling it again with
    the same settings resumes an interrupted search. The document's ``optimize.outcome`` is
    ``goal-met`` (the winner is in ``output``) or ``goal-missed`` (no candidate kept the guard; the
    run is listed as ``goal-missed`` and ``output`` is not written).

    Args:
        model: as ``bench``.
        config: an ``optimizer.OptimizeConfig``; or its fields as keyword arguments
            (``objective="latency"``, ``candidates=("wo-int8",)``, ``max_trials=4``, ``threads=1``, ...).
        time_budget: wall time, verification included: seconds or ``"15m"``, ``"1h"`` (default 13 min).
        workload: the request served, ``"prompt=256,new=64"`` (the default).
        output: folder for the winner; default ``optimized/<model name>``.
        overwrite: replace ``output`` if it exists.
        save_closest: when no candidate keeps the accuracy guard, save the closest one as
            ``<output>.closest`` (never in ``output``: that holds only a winner).
        report: write ``report.html`` into the saved folder (beside it when nothing was saved:
            ``report_path``).
        store: as ``bench``.
        log: called with each line of the search's log; on_clock_start: when the budget's clock starts.
    """
    if time_budget is not None:
        settings["time_budget_s"] = parse_duration(time_budget)
    if workload is not None:
        settings["prompt_length"], settings["new_tokens"] = parse_workload(workload)
    if config is None:
        settings.setdefault("model_task", resolve(settings.get("model", model)).probe_task())
    config = with_model_task(
        config_of(OptimizeConfig, config, {"model": model, **settings} if config is None else settings)
    )  # a config made for another model kind gets this one's
    _check_accuracy_data(config)
    store = store_of(store)
    output = Path(output) if output is not None else default_output(config.model)
    search = Search(
        config, store, output, overwrite, log=log or (lambda _line: None), save_closest=save_closest
    )
    search.on_clock_start = on_clock_start
    run_config = {**config.to_dict(), "output": str(output.resolve()), "search_key": search.key}
    with store.recording("optimize", config.model, run_config, manifest(seed=config.seed)) as run:
        doc = search.run()
        _add_rounds(run, config, doc.get("rounds"))
        base = doc["baseline"]
        run.complete({"optimize": doc, "model": base["model"], "threads": base["threads"]}, doc["outcome"])
    if report:
        _write_report(store, run.id, report_path(output, doc), log)
    return document(store, run.id)


def _add_rounds(run: Any, config: OptimizeConfig, r: dict[str, Any] | None) -> None:
    """The verification's per-round values, stored as the run's measurements."""
    if r:
        rounds = ABRounds(ABConfig(**config.ab_settings("full")), r["a"], r["b"], r["order"], r.get("blocks"))
        for m in rounds.to_measurements():
            run.add(m)


def _check_accuracy_data(config: OptimizeConfig) -> None:
    """The user's text and task are read before anything is built, so a wrong path costs no work."""
    if config.eval_text:
        load_text(config.eval_text)
    if config.task:
        load_task(config.task)


def default_output(model: str) -> Path:
    """``optimized/<name>``: the model's folder or file name without ``.gguf``."""
    name = Path(model.rstrip("/")).name.removesuffix(".gguf") or "model"
    return Path("optimized") / name


def report_path(output: Path, doc: dict[str, Any]) -> Path:
    """``report.html`` in the saved model's folder; beside that folder when nothing was saved.

    A folder is never created for the report alone: an empty output folder would make the next run
    of the same command refuse it.
    """
    if doc.get("output"):
        return Path(doc["output"]) / "report.html"
    return output.parent / f"{output.name}.report.html"


def _write_report(store: Any, run_id: int, path: Path, log: Callable[[str], None] | None) -> None:
    """Write the run's HTML report; a failure only warns through ``log`` (the run is stored)."""
    try:
        write_report(store, run_id, path)
    except UnbottleError as exc:
        if log is not None:
            log(f"warning: no report written ({exc}); later: `unbottle report {run_id}`")
