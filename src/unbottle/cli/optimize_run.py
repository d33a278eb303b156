"""The work behind ``unbottle optimize``: run the search inside a stored run, print, save."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_optimize(config: Any, output: Path, overwrite: bool, quiet: bool, json_: bool) -> dict[str, Any]:
    from unbottle.cli.common import recorded_run
    from unbottle.cli.optimize import log_line
    from unbottle.cli.show import show_run
    from unbottle.compare.ab import ABConfig, ABRounds
    from unbottle.core.env import manifest
    from unbottle.optimize.search import Search
    from unbottle.store import Store

    store = Store()
    search = Search(config, store, output, overwrite, log=log_line(quiet))
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
    return doc
