"""The search: caches → baseline → plan → screen each candidate → fallbacks → compositions →
finalists → verify.

Every trial runs in its own worker (``unbottle.optimizer.isolate``) and is written to the store's
trials table the moment it ends, keyed by the search (``OptimizeConfig.search_key``) and the trial;
running the same command again reuses what is recorded and goes on. A trial cut short by the time
budget is not recorded, so a later run with more time tries it again. The model caches are filled
before the budget's clock starts (``unbottle.optimizer.prepare``); the baseline is checked for a busy
machine before it is believed or kept (``unbottle.optimizer.host``); its measured rates price every
later trial, and the sizes shrink, or the search is refused, when the budget can't hold one candidate
and the verification (``unbottle.optimizer.plan``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unbottle.core.errors import ConfigError
from unbottle.core.naming import given
from unbottle.optimizer import cluster, host, identity, judge, nodes, speculation
from unbottle.optimizer import plan as planning
from unbottle.optimizer import prepare as caches
from unbottle.optimizer.baseline import measure as measure_baseline
from unbottle.optimizer.candidates import (
    Candidate,
    compositions,
    fallbacks,
    first_round,
    profile_order,
    short_key,
)
from unbottle.optimizer.cluster import Job
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.result import check_output, closest_folder, result_document, staging_folder
from unbottle.optimizer.running import OUT_OF_TIME, TrialRunning

MIN_BUDGET_S = 60.0
MIN_GAIN = 1.03  # a screened candidate "helped" when its objective gain is at least this
PLAN_SLACK_S = 2.0  # the parent's own work between trials


class Search(TrialRunning):
    """One ``unbottle optimize`` search (see the module docstring).

    Args:
        config: what to search.
        store: where trials are recorded (and read back on resume).
        output: the folder the winner is saved to.
        overwrite: replace ``output`` if it exists and another search wrote it.
        save_closest: when no candidate keeps the guard, save the closest beside ``output``.
        log: called with one line per event (progress for people; None to stay quiet).
    """

    def __init__(
        self,
        config: OptimizeConfig,
        store: Any,
        output: Path,
        overwrite: bool = False,
        log: Callable[[str], None] | None = None,
        save_closest: bool = False,
    ) -> None:
        self.cfg = config = caches.with_model_task(config)
        self.save_closest = save_closest
        self.store = store
        self.output = output
        self.circumstances = identity.circumstances(config.model, config.threads)
        self.key = f"{config.search_key()}-{identity.digest(self.circumstances)}"
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
        self.profile_run: int | None = None
        self.run_cfg = config  # the config the workers get: the plan's sizes once it is made
        self.plan: planning.Plan | None = None
        self.rates: planning.Rates | None = None
        self.host_busy: dict[str, Any] | None = None
        self.base_trial: dict[str, Any] | None = None  # the baseline trial the search goes on with
        self.preparation: dict[str, Any] | None = None
        self.on_clock_start: Callable[[], None] | None = None  # called when the budget's clock starts
        self._round: tuple[list[Candidate], dict[str, str], int] | None = None
        self.speculation: dict[str, Any] | None = None  # the last stage's decision (speculation.stage)
        self.lost: dict[str, str] = {}  # trials a cluster node took down with it (not recorded)
        self.nodes: list[dict[str, Any]] = []  # a cluster's nodes and their own baselines
        self.local = cluster.LocalRunner()
        self.runner: cluster.LocalRunner | cluster.RayRunner = self.local  # ``connect`` may replace it
        check_output(output, overwrite, self.key)
        self.restarted_because = identity.superseded(store, config.search_key(), self.key, self.circumstances)
        if save_closest:
            check_output(closest_folder(output), overwrite, self.key)
        if config.time_budget_s < MIN_BUDGET_S:
            raise ConfigError(
                f"{given('time_budget_s', f'{config.time_budget_s:g}', '--time-budget')} s given; measuring "
                f"the baseline alone needs at least {MIN_BUDGET_S:g} s (a few minutes for a real model): "
                "raise it"
            )

    # ---- stages ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the search to the end (or the budget) and return its result document.

        Order: the model caches (outside the budget); the baseline and the plan; the primary
        candidates; per-layer fallbacks for those that were faster but broke the guard; compositions
        of what helped; the remaining candidates with the time left; the finalists; the verification.
        Time for the last two is kept back from the start.

        Raises:
            ConfigError: the budget can't hold one candidate and the verification (the message gives
                the budget that would), or it ran out before any candidate was screened.
        """
        self.runner = cluster.make_runner(self.cfg.ray, self.log)
        try:
            return self._run()
        finally:
            self.runner.close()

    def _run(self) -> dict[str, Any]:
        self.identify()
        self.prepare()
        candidates, skipped, primary = self.first_round()
        base = self.baseline()
        if not candidates:
            self.log("no applicable pass: reporting the baseline only")
            return result_document(self, base, [], [], [], skipped)
        self.plan = self.make_plan()
        reserve = self.plan.reserve_s
        self.nodes = nodes.measure_nodes(self, reserve)
        screened = self.screen_all(candidates[:primary], base, reserve)
        screened += self.try_fallbacks(screened, base, reserve)
        screened += self.screen_all(self.combos(screened), base, reserve)
        screened += self.screen_all(candidates[primary:], base, reserve)
        if not screened:
            raise ConfigError(self._nothing_screened())
        good = sorted((s for s in screened if self.is_good(s)), key=lambda s: -s["gain"][0])
        ranked = self.rescue(self.finals(good, base) or self.closest(screened), base)
        verified = self.verify_best(ranked, base)
        self.speculation = speculation.stage(self, verified)
        return result_document(self, base, screened, ranked, verified, skipped)

    def identify(self) -> None:
        """Record what this search's trials are valid for (once); say why earlier ones are not reused."""
        if identity.IDENTITY not in self.recorded:
            self.store.record_trial(self.key, identity.IDENTITY, {"circumstances": self.circumstances})
        if self.restarted_because:
            self.log(
                "this command's earlier trials were measured under other circumstances ("
                + "; ".join(self.restarted_because)
                + "): measuring afresh"
            )

    def first_round(self) -> tuple[list[Candidate], dict[str, str], int]:
        """``candidates.first_round`` for this search (worked out once)."""
        if self._round is None:
            gguf = caches.from_gguf(self.cfg.model)
            order = self.profile_order()
            self._round = first_round(
                self.cfg.candidates, self.cfg.objective, order, gguf, self.cfg.is_encoder()
            )
        return self._round

    def prepare(self) -> None:
        """Fill the model caches the trials read, then start the budget's clock (once)."""
        caches.prepare_search(self)

    def profile_order(self) -> list[str] | None:
        """``candidates.profile_order`` for this search (notes the profile run it came from)."""
        order, self.profile_run = profile_order(self.store, self.cfg, self.log)
        return order

    def screen_all(
        self, cands: list[Candidate], base: dict[str, Any], reserve: float
    ) -> list[dict[str, Any]]:
        """Screen ``cands`` (several at once on a cluster); the summaries in the candidates' order."""
        done: dict[str, dict[str, Any]] = {}

        def start(cand: Candidate) -> Job | None:
            got = self._screen_start(cand, base, reserve)
            if isinstance(got, dict):
                done[cand.key] = self._summary(cand, got)
            return got if isinstance(got, Job) else None

        def finish(cand: Candidate, job: Job, outcome: Any, node: Any, lost: str) -> None:
            data = self.finish_trial(job, outcome, node, lost)
            if data is None:
                self.candidate_trials -= 1
                self.not_tried[cand.key] = self.lost.get(job.key, OUT_OF_TIME)
            else:
                done[cand.key] = self._summary(cand, data)

        self.runner.run_all(cands, start, finish)
        unstarted = [c.key for c in cands if c.key not in done and c.key not in self.not_tried]
        self.not_tried.update(dict.fromkeys(unstarted, cluster.NO_NODE))  # every cluster node was gone
        return [done[c.key] for c in cands if c.key in done]

    def combos(self, screened: list[dict[str, Any]]) -> list[Candidate]:
        good = [(s["cand"], s["gain"][0]) for s in screened if self.is_good(s)]
        done = {s["cand"].key for s in screened}
        return [c for c in compositions(good) if c.key not in done]

    # ---- the baseline: measured, checked for a busy host, kept only when quiet ------------------
    def baseline(self) -> dict[str, Any]:
        """The baseline's result (``unbottle.optimizer.baseline.measure``)."""
        return measure_baseline(self)

    def disturbance(self, base: dict[str, Any]) -> dict[str, Any] | None:
        return host.baseline_disturbance(self.store, self.cfg, base)

    def make_plan(self) -> planning.Plan:
        """Price the trials with the baseline's rates and fit the sizes to the time left."""
        assert self.base_trial is not None
        self.rates = planning.Rates.from_baseline(
            self.base_trial["seconds"], self.base_trial["result"], self.cfg
        )
        # a resumed search plans as the first run did: from the budget less the recorded baseline
        available = min(self.remaining(), self.cfg.time_budget_s - self.rates.baseline_s) - PLAN_SLACK_S
        try:
            plan = planning.make_plan(self.cfg, self.rates, available)
        except ConfigError as exc:
            if self.host_busy is None:
                raise
            raise ConfigError(
                f"{exc}; the host was busy while the baseline ran, which inflates this: "
                f"{self.host_busy['advice']}"
            ) from None
        self.run_cfg = dataclasses.replace(self.cfg, **plan.sizes.to_dict())
        self.log(planning.describe(plan))
        return plan

    def _nothing_screened(self) -> str:
        assert self.plan is not None and self.rates is not None
        minutes = math.ceil((self.rates.baseline_s + 2 * self.plan.screen_s + self.plan.verify_s) / 60) + 1
        return (
            f"the time budget ({self.cfg.time_budget_s:g} s) ran out before any candidate finished "
            f"screening (one was planned at {self.plan.screen_s:.0f} s); "
            f"give {given('time_budget', f'{minutes}m')}"
        )

    def _screen_start(
        self, cand: Candidate, base: dict[str, Any], reserve: float
    ) -> Job | dict[str, Any] | None:
        """A screening trial's job, or its recorded data; None (with the reason in ``not_tried``)
        when the trial limit or the budget stops it. A started trial counts toward ``max_trials``."""
        if self.cfg.max_trials is not None and self.candidate_trials >= self.cfg.max_trials:
            self.not_tried[cand.key] = f"{given('max_trials', self.cfg.max_trials)} reached"
            return None
        payload = self._payload(cand, base, "screen")
        got = self.start_trial(f"screen:{cand.key}", "measure", payload, reserve, self._cost("screen_s"))
        if got is None:
            self.not_tried[cand.key] = OUT_OF_TIME
            return None
        self.candidate_trials += 1
        return got

    def _cost(self, kind: str) -> float:
        """The plan's expected seconds of one trial of ``kind`` (0 before there is a plan)."""
        return getattr(self.plan, kind) if self.plan is not None else 0.0

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
        self, screened: list[dict[str, Any]], base: dict[str, Any], reserve: float, strict: bool = False
    ) -> list[dict[str, Any]]:
        """Per-layer fallback for candidates that were faster but broke the guard; ``strict`` (a finalist
        that broke it on its interval): stop at a variant that ``_meets_guard``, not screening's limits."""
        out = []
        for s in screened:
            if s["gain"] is None or s["gain"][0] < MIN_GAIN or s["guard"]["passed"]:
                continue
            cand = s["cand"]
            payload = {"passes": cand.to_payload()}
            data = self.trial(
                f"sensitivity:{cand.key}", "sensitivity", payload, reserve, self._cost("screen_s")
            )
            if data is None or data["status"] != "ok" or not data["result"]["scores"]:
                continue
            self.sensitivity[cand.key] = data["result"]["scores"]
            for variant in fallbacks(cand, data["result"]["scores"]):
                got = self.screen_all([variant], base, reserve)
                if not got:
                    break
                extra = got[0]
                out.append(extra)
                if self.is_good(extra) and (not strict or self._meets_guard(extra)):
                    break  # the fewest layers kept in float that meet the guard
        return out

    def _meets_guard(self, s: dict[str, Any]) -> bool:
        """A screened candidate's point estimates within ``judge.RESCUE_MARGIN`` of the real limits."""
        goals = judge.screening_goals(self.goals, judge.RESCUE_MARGIN)
        return judge.guard(goals, s["trial"]["result"]["comparisons"], on_point=True)["passed"]

    def rescue(self, ranked: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
        """When the best finalist broke the guard on its interval: per-layer fallback for it, and the
        variants that meet the guard measured as finalists and ranked by the guard first."""
        top = ranked[0] if ranked else None
        if top is None or top["trial"]["stage"] != "final" or top["guard"]["passed"]:
            return ranked
        self.log(f"{short_key(top['cand'].key)} missed the guard as a finalist: trying per-layer fallback")
        tried = self.try_fallbacks([top], base, self._cost("verify_s"), strict=True)
        variants = [v for v in tried if self.is_good(v) and self._meets_guard(v)]
        if not variants:
            return ranked
        merged = self.finals(variants, base) + ranked
        return sorted(merged, key=lambda s: not (s["guard"] or {}).get("passed"))

    def closest(self, screened: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """When nothing kept the guard: the faster candidate that lost the least accuracy, so the
        search still ends with a saved model and says which goal it missed."""
        best = judge.closest([s for s in screened if s["gain"] is not None and s["gain"][0] >= MIN_GAIN])
        if best is not None:
            self.log(f"no candidate kept the guard; verifying the closest, {short_key(best['cand'].key)}")
        return [] if best is None else [best]

    def finals(self, good: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
        """Measure the top screened candidates fully; rank guard-passing finalists first."""
        done: list[dict[str, Any]] = []
        reserve = self._cost("verify_s")

        def start(s: dict[str, Any]) -> Job | None:
            if self.cfg.max_trials is not None and self.candidate_trials >= self.cfg.max_trials:
                return None
            payload = self._payload(s["cand"], base, "final")
            got = self.start_trial(
                f"final:{s['cand'].key}", "measure", payload, reserve, self._cost("final_s")
            )
            self.candidate_trials += got is not None
            if isinstance(got, dict):
                done.append(self._summary(s["cand"], got))
            return got if isinstance(got, Job) else None

        def finish(s: dict[str, Any], job: Job, outcome: Any, node: Any, lost: str) -> None:
            data = self.finish_trial(job, outcome, node, lost)
            if data is not None:
                done.append(self._summary(s["cand"], data))

        self.runner.run_all(good[: self.cfg.finalists], start, finish)
        finals = {d["cand"].key: d for d in done if d["gain"] is not None}
        by_gain = sorted(finals.values(), key=lambda d: -d["gain"][0])
        rest = [s for s in good if s["cand"].key not in finals]  # screened only: between the two
        return (
            [d for d in by_gain if d["guard"]["passed"]]
            + rest
            + [d for d in by_gain if not d["guard"]["passed"]]
        )

    def verify_best(self, ranked: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
        """Verify the best; if its guard fails on the CI bound, the next one while time allows."""
        verified = []
        for i, s in enumerate(ranked[:2]):
            if i > 0 and self.remaining() < 0.8 * self._cost("verify_s"):
                break
            payload = {
                "key": s["cand"].key,
                "candidate": s["cand"].to_dict(),
                "passes": s["cand"].to_payload(),
                "base_evals": base["evals"]["held_out"],
                "base_own": {k: base[k] for k in ("weights_mib", "peak_rss_mib")},
                "output": str(staging_folder(self.output.resolve(), s["cand"].key)),
            }
            data = self.trial(f"verify:{s['cand'].key}", "verify", payload, reserve=-(10**6), here=True)
            if data is None:
                break
            summary = self._summary(s["cand"], {**data, "stage": "verify"})
            verified.append(summary)
            if summary["guard"] and summary["guard"]["passed"]:
                break
        return verified
