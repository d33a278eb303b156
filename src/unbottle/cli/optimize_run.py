"""The work behind ``unbottle optimize``: run the search inside a stored run, print, save.

The time-budget bar starts with the search's clock, after the model caches are filled (which the
budget does not count; see ``unbottle.optimizer.prepare``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_optimize(
    config: Any, output: Path, overwrite: bool, quiet: bool, json_: bool, report: bool = True
) -> dict[str, Any]:
    from unbottle.cli.common import recorded_run
    from unbottle.cli.optimize import log_line
    from unbottle.cli.progress import Progress
    from unbottle.cli.show import show_run
    from unbottle.comparison.ab import ABConfig, ABRounds
    from unbottle.core.env import manifest
    from unbottle.optimizer.search import Search
    from unbottle.store import Store

    store = Store()
    with Progress(quiet) as progress:
        clock: list[Any] = []  # the time-budget bar, from when the search's clock starts
        log = log_line(quiet)

        def search_log(line: str) -> None:
            log(line)
            for budget in clock:
                budget.tick()

        search = Search(config, store, output, overwrite, log=search_log)
        search.on_clock_start = lambda: clock.append(
            progress.task("optimize (time budget)", config.time_budget_s, "s", clock=True)
        )
        run_config = {**config.to_dict(), "output": str(output.resolve()), "search_key": search.key}
        with recorded_run(store, "optimize", config.model, run_config, manifest(seed=config.seed)) as run_id:
            doc = search.run()
            if doc.get("rounds"):
                r = doc["rounds"]
                rounds = ABRounds(ABConfig(**config.ab_settings("full")), r["a"], r["b"], r["order"])
                for m in rounds.to_measurements():
                    store.add_measurement(run_id, m)
    base = doc["baseline"]
    store.finish_run(
        run_id, "complete", result={"optimize": doc, "model": base["model"], "threads": base["threads"]}
    )
    show_run(store, run_id, json_)
    if report:
        write_optimize_report(store, run_id, report_path(output, doc))
    return doc


def report_path(output: Path, doc: dict[str, Any]) -> Path:
    """``report.html`` in the saved model's folder; beside that folder when nothing was saved.

    A folder is never created for the report alone: an empty output folder would make the next run
    of the same command refuse it.
    """
    if doc.get("output"):
        return Path(doc["output"]) / "report.html"
    return output.parent / f"{output.name}.report.html"


def write_optimize_report(store: Any, run_id: int, path: Path) -> None:
    """Write the run's HTML report and print where; a failure here only warns (the run is stored)."""
    from unbottle.cli.common import err
    from unbottle.core.errors import UnbottleError
    from unbottle.reporting.output import write_report

    try:
        written = write_report(store, run_id, path)
    except UnbottleError as exc:
        err.print(f"warning: no report written ({exc}); later: `unbottle report {run_id}`", highlight=False)
        return
    err.print(f"report: {written}", highlight=False)
