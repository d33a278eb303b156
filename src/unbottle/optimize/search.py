"""The search: baseline → screen each candidate → fallbacks → compositions → finalists → verify.

Every trial runs in its own worker (``unbottle.search.isolate``) and is written to the store's
trials table the moment it ends, keyed by the search (``OptimizeConfig.search_key``) and the trial;
running the same command again reuses what is recorded and goes on. A trial cut short by the time
budget is not recorded, so a later run with more time tries it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unbottle.core.errors import BenchError, ConfigError
from unbottle.optimize import judge
from unbottle.optimize.candidates import Candidate, compositions, fallbacks, first_round, short_key
from unbottle.optimize.config import OptimizeConfig
from unbottle.optimize.result import result_document, staging_folder

TRIAL = "unbottle.optimize.trial:"
MIN_BUDGET_S = 60.0
MIN_GAIN = 1.03  # a screened candidate "helped" when its objective gain is at least this


class Search:
    """One ``unbottle optimize`` search (see the module docstring).

    Args:
        config: what to search.
        store: where trials are recorded (and read back on resume).
        output: the folder the winner is saved to.
        overwrite: replace ``output`` if it exists and another search wrote it.
        log: called with one line per event (progress for people; None to stay quiet).
    """

    def __init__(
        self,
        config: OptimizeConfig,
        store: Any,
        output: Path,
        overwrite: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = config
        self.store = store
        self.output = output
        self.key = config.search_key()
        self.log = log or (lambda _line: None)
        self.goals = config.guard()
        self.screen_goals = judge.screening_goals(self.goals)
        self.start = time.monotonic()
        self.trials: dict[str, dict[str, Any]] = {}
        self.recorded = store.trials(self.key)  # what an earlier run of this search finished (read once)
        self.resumed = 0
        self.candidate_trials = 0
        self.not_tried: dict[str, str] = {}
        self.sensitivity: dict[str, dict[str, float]] = {}
        self.reserve = 0.0
        self.profile_run: int | None = None
        _check_output(output, overwrite, self.key)
        if config.time_budget_s < MIN_BUDGET_S:
            raise ConfigError(
                f"--time-budget {config.time_budget_s:g} s given; measuring the baseline alone needs at "
                f"least {MIN_BUDGET_S:g} s (a few minutes for a real model): raise it"
            )

    # ---- clock -------------------------------------------------------------------------------
    def remaining(self) -> float:
        return self.cfg.time_budget_s - (time.monotonic() - self.start)

    # ---- running one trial -------------------------------------------------------------------
    def trial(
        self, key: str, function: str, payload: dict[str, Any], reserve: float = 0.0
    ) -> dict[str, Any] | None:
        """Run (or read back) one trial; None when the budget can't fit it."""
        from unbottle.search.isolate import run_isolated

        if key in self.recorded:
            self.trials[key] = self.recorded[key]
            self.resumed += 1
            self.log(f"{short_key(key)}: recorded earlier ({self.recorded[key]['status']}); not repeated")
            return self.recorded[key]
        budget = self.remaining() - reserve
        if budget < 5:
            return None
        timeout = min(self.cfg.trial_timeout_s, budget)
        self.log(f"{short_key(key)}: running (limit {timeout:.0f} s) …")
        full = {"config": self.cfg.to_dict(), "search": self.key, **payload}
        outcome = run_isolated(TRIAL + function, full, timeout, self._memory_limit())
        cut_by_budget = outcome.status == "timeout" and timeout < self.cfg.trial_timeout_s
        data = {
            "key": key,
            "stage": key.split(":", 1)[0],
            "candidate": payload.get("candidate"),
            **{k: v for k, v in outcome.to_dict().items() if k != "exit_code"},
        }
        if key == "baseline" and outcome.status != "ok":
            return data  # not recorded: nothing can follow without it, so a re-run retries it
        if cut_by_budget:
            self.log(
                f"{short_key(key)}: stopped by the time budget after {outcome.seconds:.0f} s (not recorded)"
            )
            return None
        self.store.record_trial(self.key, key, data)
        self.trials[key] = data
        self.log(
            f"{short_key(key)}: {data['status']} in {outcome.seconds:.0f} s"
            + (f" — {data['reason']}" if data["reason"] else "")
        )
        return data

    def _memory_limit(self) -> float:
        if self.cfg.memory_limit_mib is not None:
            return self.cfg.memory_limit_mib
        import psutil

        return 0.75 * psutil.virtual_memory().total / 2**20

    # ---- stages ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the search to the end (or the budget) and return its result document.

        Order: the primary candidates; per-layer fallbacks for those that were faster but broke the
        guard; compositions of what helped; the remaining candidates with the time left; the
        finalists; the verification. Time for the last two is kept back from the start.
        """
        base = self.baseline()
        self.reserve = self.verify_estimate(base)
        reserve = self.reserve * (1 + 0.7 * self.cfg.finalists)  # finals cost ~0.7 of a verification
        candidates, skipped, primary = first_round(
            self.cfg.candidates, self.cfg.objective, self.profile_order()
        )
        if not candidates:
            self.log("no applicable pass: reporting the baseline only")
        screened = self.screen_all(candidates[:primary], base, reserve)
        screened += self.try_fallbacks(screened, base, reserve)
        screened += self.screen_all(self.combos(screened), base, reserve)
        screened += self.screen_all(candidates[primary:], base, reserve)
        good = sorted((s for s in screened if self.is_good(s)), key=lambda s: -s["gain"][0])
        ranked = self.finals(good, base, self.reserve) or self.closest(screened)
        verified = self.verify_best(ranked, base)
        return result_document(self, base, screened, ranked, verified, skipped)

    def profile_order(self) -> list[str] | None:
        """The latest stored profile of this model at these threads: its recommendations for the
        objective's phase, best first (None when there is none, or the objective has no phase)."""
        from unbottle.core.env import physical_cores

        phase = {"decode": "decode", "throughput": "decode", "prefill": "prefill", "ttft": "prefill"}
        wanted = phase.get(self.cfg.objective)
        threads = self.cfg.threads or physical_cores()
        if wanted is None:
            return None
        for run in self.store.list_runs(limit=100, kind="profile"):
            r = run.result or {}
            if run.model == self.cfg.model and (r.get("threads") or {}).get("torch_num_threads") == threads:
                order = r["profile"]["diagnosis"].get("recommended_by_phase", {}).get(wanted)
                if order:
                    self.log(f"candidate order from profile run {run.id}: {', '.join(order)} first")
                    self.profile_run = run.id
                    return order
        return None

    def screen_all(
        self, cands: list[Candidate], base: dict[str, Any], reserve: float
    ) -> list[dict[str, Any]]:
        return [s for s in (self.screen(c, base, reserve) for c in cands) if s is not None]

    def combos(self, screened: list[dict[str, Any]]) -> list[Candidate]:
        good = [(s["cand"], s["gain"][0]) for s in screened if self.is_good(s)]
        done = {s["cand"].key for s in screened}
        return [c for c in compositions(good) if c.key not in done]

    def baseline(self) -> dict[str, Any]:
        data = self.trial("baseline", "baseline", {})
        if data is None or data["status"] == "timeout":
            raise ConfigError(
                f"the time budget ({self.cfg.time_budget_s:g} s) ran out while measuring the baseline; "
                "give a larger --time-budget (the default model needs about 2 minutes for it)"
            )
        if data["status"] != "ok":
            raise BenchError(f"measuring the baseline failed: {data['reason']}")
        return data["result"]

    def verify_estimate(self, base: dict[str, Any]) -> float:
        """Seconds to keep for verifying the winner, from the baseline's measured rates."""
        cfg = self.cfg
        overhead = self.trials["baseline"]["seconds"] - sum(base["eval_s"].values()) - base["screen_ab_s"]
        scale = (cfg.full_rounds * cfg.new_tokens) / (cfg.screen_rounds * cfg.screen_new_tokens)
        ab = base["screen_ab_s"] * scale  # the verification runs the A/B whatever the objective
        estimate = max(overhead, 5.0) + ab + base["eval_s"]["full"] + 30.0
        self.log(f"baseline measured; keeping {estimate:.0f} s of the budget for verification")
        return estimate

    def screen(self, cand: Candidate, base: dict[str, Any], reserve: float) -> dict[str, Any] | None:
        if self.cfg.max_trials is not None and self.candidate_trials >= self.cfg.max_trials:
            self.not_tried[cand.key] = f"--max-trials {self.cfg.max_trials} reached"
            return None
        data = self.trial(f"screen:{cand.key}", "measure", self._payload(cand, base, "screen"), reserve)
        if data is None:
            self.not_tried[cand.key] = "the time budget ran out"
            return None
        self.candidate_trials += 1
        return self._summary(cand, data)

    def _payload(self, cand: Candidate, base: dict[str, Any], stage: str) -> dict[str, Any]:
        return {
            "stage": stage,
            "key": cand.key,
            "candidate": cand.to_dict(),
            "passes": cand.to_payload(),
            "base_evals": base["evals"]["screen" if stage == "screen" else "full"],
            "base_own": {k: base[k] for k in ("weights_mib", "peak_rss_mib")},
        }

    def _summary(self, cand: Candidate, data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"cand": cand, "trial": data, "gain": None, "guard": None}
        if data["status"] == "ok":
            cmps = data["result"]["comparisons"]
            out["gain"] = judge.gain(cmps.get(self.cfg.objective_spec()[1]))
            screen = data["stage"] == "screen"
            out["guard"] = judge.guard(self.screen_goals if screen else self.goals, cmps, on_point=screen)
        return out

    def is_good(self, s: dict[str, Any]) -> bool:
        return s["gain"] is not None and s["gain"][0] >= MIN_GAIN and s["guard"]["passed"]

    def try_fallbacks(
        self, screened: list[dict[str, Any]], base: dict[str, Any], reserve: float
    ) -> list[dict[str, Any]]:
        """Per-layer fallback for candidates that were faster but broke the guard."""
        out = []
        for s in screened:
            if s["gain"] is None or s["gain"][0] < MIN_GAIN or s["guard"]["passed"]:
                continue
            cand = s["cand"]
            data = self.trial(
                f"sensitivity:{cand.key}", "sensitivity", {"passes": cand.to_payload()}, reserve
            )
            if data is None or data["status"] != "ok" or not data["result"]["scores"]:
                continue
            self.sensitivity[cand.key] = data["result"]["scores"]
            for variant in fallbacks(cand, data["result"]["scores"]):
                extra = self.screen(variant, base, reserve)
                if extra is None:
                    break
                out.append(extra)
                if self.is_good(extra):
                    break  # the fewest layers kept in float that meet the guard
        return out

    def closest(self, screened: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """When nothing kept the guard: the faster candidate that lost the least accuracy, so the
        search still ends with a saved model and says which goal it missed."""
        faster = [s for s in screened if s["gain"] is not None and s["gain"][0] >= MIN_GAIN]
        if not faster:
            return []

        def loss(s: dict[str, Any]) -> float:
            return judge.degradation(judge.accuracy_change(s["trial"]["result"]["comparisons"]))

        best = min(faster, key=loss)
        self.log(
            f"no candidate kept the guard; verifying the closest, {short_key(best['cand'].key)}, to save it"
        )
        return [best]

    def finals(
        self, good: list[dict[str, Any]], base: dict[str, Any], reserve: float
    ) -> list[dict[str, Any]]:
        """Measure the top screened candidates fully; rank guard-passing finalists first."""
        done = []
        for s in good[: self.cfg.finalists]:
            if self.cfg.max_trials is not None and self.candidate_trials >= self.cfg.max_trials:
                break
            if self.remaining() - reserve < reserve * 0.8:
                break  # a finalist costs about as much as the verification
            data = self.trial(
                f"final:{s['cand'].key}", "measure", self._payload(s["cand"], base, "final"), reserve
            )
            if data is None:
                break
            self.candidate_trials += 1
            done.append(self._summary(s["cand"], data))
        finals = {d["cand"].key: d for d in done if d["gain"] is not None}
        passing = sorted((d for d in finals.values() if d["guard"]["passed"]), key=lambda d: -d["gain"][0])
        failing = sorted(
            (d for d in finals.values() if not d["guard"]["passed"]), key=lambda d: -d["gain"][0]
        )
        rest = [s for s in good if s["cand"].key not in finals]
        return passing + rest + failing

    def verify_best(self, ranked: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
        """Verify the best; if its guard fails on the CI bound, the next one while time allows."""
        verified = []
        for i, s in enumerate(ranked[:2]):
            if i > 0 and self.remaining() < 0.8 * self.reserve:
                break
            payload = {
                "key": s["cand"].key,
                "candidate": s["cand"].to_dict(),
                "passes": s["cand"].to_payload(),
                "base_evals": base["evals"]["full"],
                "base_own": {k: base[k] for k in ("weights_mib", "peak_rss_mib")},
                "output": str(staging_folder(self.output.resolve(), s["cand"].key)),
            }
            data = self.trial(f"verify:{s['cand'].key}", "verify", payload, reserve=-(10**6))
            if data is None:
                break
            summary = self._summary(s["cand"], {**data, "stage": "verify"})
            verified.append(summary)
            if summary["guard"] and summary["guard"]["passed"]:
                break
        return verified


def _check_output(output: Path, overwrite: bool, key: str) -> None:
    """Refuse an existing output folder unless --overwrite, or it was saved by this same search."""
    if not output.exists() or overwrite:
        return
    from unbottle.passes.recipe import RECIPE_FILE, read_recipe

    if (output / RECIPE_FILE).exists():
        try:
            if read_recipe(output).search == key:
                return
        except Exception:  # unreadable recipe: treat like any other existing folder
            pass
    raise ConfigError(f"output folder {output} exists; choose another -o or pass --overwrite to replace it")
