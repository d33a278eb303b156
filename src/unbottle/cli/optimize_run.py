"""What ``unbottle optimize`` shows while ``unbottle.optimize`` works: the log, the time-budget bar
(from when the search's clock starts), the stored run's tables and where the report went."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_optimize(
    config: Any, output: Path, overwrite: bool, quiet: bool, json_: bool, report: bool = True
) -> dict[str, Any]:
    from unbottle.api.tuning import optimize, report_path
    from unbottle.cli.common import err
    from unbottle.cli.optimize import log_line
    from unbottle.cli.progress import Progress
    from unbottle.cli.show import show_run
    from unbottle.store import Store

    store = Store()
    with Progress(quiet) as progress:
        clock: list[Any] = []  # the time-budget bar, from when the search's clock starts
        log = log_line(quiet)

        def search_log(line: str) -> None:
            log(line)
            for budget in clock:
                budget.tick()

        def start_clock() -> None:
            clock.append(progress.task("optimize (time budget)", config.time_budget_s, "s", clock=True))

        doc = optimize(
            config=config,
            output=output,
            overwrite=overwrite,
            report=report,
            store=store,
            log=search_log,
            on_clock_start=start_clock,
        )
    show_run(store, doc["run_id"], json_)
    path = report_path(output, doc["optimize"])
    if report and path.exists():
        err.print(f"report: {path}", highlight=False)
    return doc["optimize"]
