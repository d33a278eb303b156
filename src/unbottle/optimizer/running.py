"""Running the search's trials: read back what an earlier run recorded, fit the rest to the budget,
run each where the search's runner puts it (``unbottle.optimizer.cluster``), record it as it ends.

``Search`` (``unbottle.optimizer.search``) is one of these; its stages decide which trials to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from unbottle.optimizer import cluster, isolate
from unbottle.optimizer.candidates import short_key
from unbottle.optimizer.cluster import Job

TRIAL = "unbottle.optimizer.trial:"
OUT_OF_TIME = "the time budget ran out"


class TrialRunning:
    """The trial mechanics of a search; the attributes are set by ``Search.__init__``."""

    cfg: Any
    store: Any
    key: str
    start: float
    log: Callable[[str], None]
    trials: dict[str, dict[str, Any]]
    recorded: dict[str, dict[str, Any]]
    resumed: int
    run_cfg: Any
    lost: dict[str, str]
    local: cluster.LocalRunner
    runner: Any

    # ---- clock -------------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.cfg.time_budget_s - (time.monotonic() - self.start)

    # ---- running one trial -------------------------------------------------------------------
    def trial(
        self,
        key: str,
        function: str,
        payload: dict[str, Any],
        reserve: float = 0.0,
        expected: float = 0.0,
        record: bool = True,
        here: bool = False,
    ) -> dict[str, Any] | None:
        """Run (or read back) one trial; None when the budget can't fit it (or its node was lost).

        A trial is not started when less than ``expected`` seconds (its planned cost) are left beside
        ``reserve``; with ``record=False`` its outcome is returned without being stored; ``here``: on
        this machine even when the search runs on a cluster (the baseline, and what writes the output).
        """
        job = self.start_trial(key, function, payload, reserve, expected, record)
        if not isinstance(job, Job):
            return job
        outcome, node, lost = (self.local if here else self.runner).run(job)
        return self.finish_trial(job, outcome, node, lost)

    def start_trial(
        self,
        key: str,
        function: str,
        payload: dict[str, Any],
        reserve: float = 0.0,
        expected: float = 0.0,
        record: bool = True,
    ) -> Job | dict[str, Any] | None:
        """The job for one trial; its recorded data when an earlier run finished it; None when the
        budget can't fit it."""
        if key in self.recorded:
            self.trials[key] = self.recorded[key]
            self.resumed += 1
            self.log(f"{short_key(key)}: recorded earlier ({self.recorded[key]['status']}); not repeated")
            return self.recorded[key]
        budget = self.remaining() - reserve
        if budget < max(5.0, expected):
            return None
        timeout = min(self.cfg.trial_timeout_s, budget)
        self.log(f"{short_key(key)}: running (limit {timeout:.0f} s) …")
        full = {"config": self.run_cfg.to_dict(), "search": self.key, **payload}
        target = function if ":" in function else TRIAL + function  # a worker function elsewhere
        return Job(key, target, full, timeout, self.cfg.memory_limit_mib, record)

    def finish_trial(
        self, job: Job, outcome: isolate.TrialOutcome | None, node: dict[str, Any] | None, lost: str = ""
    ) -> dict[str, Any] | None:
        """Record a trial's outcome; None when it was cut by the budget or lost with its node."""
        key = job.key
        if outcome is None:
            self.lost[key] = lost
            self.log(f"{short_key(key)}: lost ({lost}); not recorded, a later run tries it again")
            return None
        cut_by_budget = outcome.status == "timeout" and job.timeout_s < self.cfg.trial_timeout_s
        data = {
            "key": key,
            "stage": key.split(":", 1)[0],
            "candidate": job.payload.get("candidate"),
            **{k: v for k, v in outcome.to_dict().items() if k != "exit_code"},
            **({"node": node} if node else {}),
        }
        if key == "baseline" and outcome.status != "ok":
            return data  # not recorded: nothing can follow without it, so a re-run retries it
        if cut_by_budget:
            self.log(
                f"{short_key(key)}: stopped by the time budget after {outcome.seconds:.0f} s (not recorded)"
            )
            return None
        where = f" on {node['hostname']} ({(node.get('node_id') or '')[:12]})" if node else ""
        self.log(
            f"{short_key(key)}: {data['status']} in {outcome.seconds:.0f} s{where}"
            + (f" — {data['reason']}" if data["reason"] else "")
        )
        if job.record:
            self.record(key, data)
        return data

    def record(self, key: str, data: dict[str, Any]) -> None:
        self.store.record_trial(self.key, key, data)
        self.trials[key] = data

    def memory_limit(self) -> float:
        """A worker's memory limit on this machine: the given one, else 75% of its memory."""
        return cluster.memory_limit(self.cfg.memory_limit_mib)
