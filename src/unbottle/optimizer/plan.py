"""The search's plan: what one trial will cost, predicted from the baseline's own measured rates.

A screening trial, a finalist and the verification are the baseline's parts at other sizes: a
worker that starts and loads the model, interleaved A/B rounds of some tokens, perplexity on some
tokens. The baseline times each part, so the search knows before starting anything whether the time
budget holds the verification and at least one candidate. When it doesn't at the configured sizes,
screening shrinks first (fewer rounds, new tokens and evaluation tokens), then the verification;
when even the smallest sizes don't fit, the search is refused with the budget that would fit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from unbottle.core.errors import ConfigError
from unbottle.core.naming import given
from unbottle.optimizer.config import SPECULATION_PROMPTS

# (field, smallest value it is scaled down to, what it is): screening first, then the verification.
SCREEN_STEPS = (
    ("screen_rounds", 3, "screening A/B rounds"),
    ("screen_new_tokens", 16, "screening new tokens per round"),
    ("screen_tokens", 512, "screening evaluation tokens"),
)
VERIFY_STEPS = (
    ("full_rounds", 5, "verification A/B rounds"),
    ("eval_tokens", 2048, "finalist and verification evaluation tokens"),
)
MARGIN = 1.25  # estimates are of the baseline's speed; a candidate may run slower than it
MARGIN_S = 5.0


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The measurement sizes a plan settles on (``OptimizeConfig`` fields of the same names)."""

    screen_rounds: int
    screen_new_tokens: int
    screen_tokens: int
    full_rounds: int
    eval_tokens: int

    @classmethod
    def of(cls, cfg: Any) -> Sizes:
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Rates:
    """What the baseline trial measured, as rates a trial of other sizes can be priced with.

    Attributes:
        overhead_s: a worker's fixed cost: start, imports, the first model load, its own-memory decode.
        load_s: one more model load, as measured (trials load the baseline again for their A/B).
        ab_unit_s: A/B seconds per side per round per new token (per round for ``prefill``),
            the warm-up repeat included.
        ab_prompt_s: A/B seconds per side per round spent on the prompt before the first new token
            (the decode scenario's prefill: a fixed cost of each round, whatever the new tokens).
        eval_s_per_token: ``{"screen": s, "full": s}``, perplexity (and task) seconds per token.
        baseline_s: the baseline trial's wall time.
    """

    overhead_s: float
    load_s: float
    ab_unit_s: float
    eval_s_per_token: dict[str, float]
    baseline_s: float
    ab_prompt_s: float = 0.0

    @classmethod
    def from_baseline(cls, seconds: float, base: dict[str, Any], cfg: Any) -> Rates:
        """Rates from a baseline trial's wall ``seconds`` and its result ``base`` under ``cfg``."""
        eval_s = base["eval_s"]
        reload_s = base.get("reload_s", base["load_s"])  # recorded before reloads were timed: the first
        overhead = max(seconds - sum(eval_s.values()) - base["screen_ab_s"] - base.get("reload_s", 0.0), 1.0)
        side_rounds = 2 * (cfg.screen_rounds + 1)
        share = _prompt_share(base.get("rates", {}), cfg.screen_new_tokens)
        per_side_round = base["screen_ab_s"] / side_rounds
        return cls(
            overhead_s=overhead,
            load_s=reload_s,
            ab_unit_s=(1 - share)
            * base["screen_ab_s"]
            / _ab_units(cfg, cfg.screen_rounds, cfg.screen_new_tokens),
            ab_prompt_s=share * per_side_round,
            eval_s_per_token={
                "screen": eval_s["screen"] / cfg.screen_tokens,
                "full": eval_s["full"] / cfg.eval_tokens,
            },
            baseline_s=seconds,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _prompt_share(rates: dict[str, float], new_tokens: int) -> float:
    """The part of a decode round spent before the first new token (0 for other scenarios)."""
    ttft, step = rates.get("decode.ttft"), rates.get("decode.token_latency")
    if not ttft or not step:
        return 0.0
    return ttft / (ttft + (new_tokens - 1) * step)


def _ab_s(cfg: Any, rates: Rates, rounds: int, new_tokens: int) -> float:
    """One A/B of ``rounds`` rounds at ``new_tokens``: per-token steps and each round's prompt."""
    return rates.ab_unit_s * _ab_units(cfg, rounds, new_tokens) + rates.ab_prompt_s * 2 * (rounds + 1)


def _ab_units(cfg: Any, rounds: int, new_tokens: int) -> float:
    """Side-rounds × tokens one A/B runs (one warm-up repeat per side, as ``run_ab`` does)."""
    per_round = 1 if cfg.objective_spec()[0] == "prefill" else new_tokens
    return 2 * (rounds + 1) * per_round


def _priced(seconds: float) -> float:
    return seconds * MARGIN + MARGIN_S


def screen_s(cfg: Any, rates: Rates, sizes: Sizes) -> float:
    """One screening trial: candidate load and apply, a fresh baseline for the A/B, the screen eval."""
    speed = cfg.objective_spec()[0] is not None
    ab = rates.load_s + _ab_s(cfg, rates, sizes.screen_rounds, sizes.screen_new_tokens)
    return _priced(
        rates.overhead_s + (ab if speed else 0.0) + rates.eval_s_per_token["screen"] * sizes.screen_tokens
    )


def final_s(cfg: Any, rates: Rates, sizes: Sizes) -> float:
    """One finalist: as a screen, with half the verification's rounds and the full evaluation."""
    speed = cfg.objective_spec()[0] is not None
    rounds = max(sizes.screen_rounds, sizes.full_rounds // 2)
    ab = rates.load_s + _ab_s(cfg, rates, rounds, cfg.new_tokens)
    return _priced(
        rates.overhead_s + (ab if speed else 0.0) + rates.eval_s_per_token["full"] * sizes.eval_tokens
    )


def verify_s(cfg: Any, rates: Rates, sizes: Sizes) -> float:
    """The verification: apply and save, reload, a fresh baseline, the full A/B (whatever the
    objective; a prefill objective adds a decode A/B of the workload, priced as its prefill one)
    and two full evaluations: the held-out part the guard judges, and the selection part again (the
    reloaded model reproduces the finalist's numbers)."""
    ab = _ab_s(cfg, rates, sizes.full_rounds, cfg.new_tokens)
    if cfg.objective_spec()[0] == "prefill":
        ab *= 2
    loads = 3 * rates.load_s
    evals = 2 * rates.eval_s_per_token["full"] * sizes.eval_tokens
    return _priced(rates.overhead_s + loads + ab + evals)


def speculate_s(cfg: Any, rates: Rates, sizes: Sizes) -> float:
    """The speculation stage (0 where it doesn't apply): a load, the held-out prompts decoded plainly,
    in the reference arithmetic and speculatively, and the full A/B of plain against speculative
    decoding, priced as the baseline decodes."""
    if not cfg.speculation_applies():
        return 0.0
    one_decode = rates.ab_unit_s * cfg.new_tokens + rates.ab_prompt_s
    match = 3 * SPECULATION_PROMPTS * one_decode
    return _priced(rates.overhead_s + match + _ab_s(cfg, rates, sizes.full_rounds, cfg.new_tokens))


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes the search runs at, what each kind of trial is expected to cost, and why.

    Attributes:
        sizes: the measurement sizes every trial uses.
        screen_s / final_s / verify_s: expected seconds of one trial of each kind.
        speculate_s: expected seconds of the speculation stage (0 where it doesn't apply). Not held
            back from screening: the stage runs with the time left after the verification, and is
            declined as not measured where less is left.
        finalists: finalists the budget holds beside one screen and the verification.
        available_s: seconds the plan was made for (the budget after the baseline).
        scaled: one line per size scaled down, with the configured value.
    """

    sizes: Sizes
    screen_s: float
    final_s: float
    verify_s: float
    finalists: int
    available_s: float
    scaled: tuple[str, ...] = ()
    speculate_s: float = 0.0

    @property
    def reserve_s(self) -> float:
        """Seconds screening leaves for the finalists and the verification."""
        return self.verify_s + self.finalists * self.final_s

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["scaled"] = list(self.scaled)
        return out


def make_plan(cfg: Any, rates: Rates, available_s: float) -> Plan:
    """The largest sizes (the configured ones at most) at which one screen and the verification fit.

    Args:
        cfg: the search's ``OptimizeConfig``.
        rates: the baseline's measured rates.
        available_s: seconds of the budget left for everything after the baseline.

    Raises:
        ConfigError: not even the smallest sizes fit; the message gives the budget that would.
    """
    configured = Sizes.of(cfg)
    sizes = configured

    def cost(s: Sizes) -> float:
        return screen_s(cfg, rates, s) + verify_s(cfg, rates, s)

    for field, floor, _what in SCREEN_STEPS + VERIFY_STEPS:
        while cost(sizes) > available_s and getattr(sizes, field) > floor:
            smaller = dataclasses.replace(sizes, **{field: max(floor, getattr(sizes, field) // 2)})
            if cost(smaller) >= cost(sizes):
                break  # this size costs nothing here (e.g. screening rounds when the objective is size)
            sizes = smaller
    if cost(sizes) > available_s:
        raise ConfigError(_refusal(cfg, rates, sizes))
    spare = available_s - cost(sizes)
    one_final = final_s(cfg, rates, sizes)
    finalists = min(cfg.finalists, int(spare // one_final)) if one_final > 0 else cfg.finalists
    scaled = tuple(
        f"{what}: {getattr(sizes, field)} (configured {getattr(configured, field)})"
        for field, _floor, what in SCREEN_STEPS + VERIFY_STEPS
        if getattr(sizes, field) != getattr(configured, field)
    )
    return Plan(
        sizes=sizes,
        screen_s=screen_s(cfg, rates, sizes),
        final_s=one_final,
        verify_s=verify_s(cfg, rates, sizes),
        finalists=finalists,
        available_s=available_s,
        scaled=scaled,
        speculate_s=speculate_s(cfg, rates, sizes),
    )


def _refusal(cfg: Any, rates: Rates, smallest: Sizes) -> str:
    one, verify = screen_s(cfg, rates, smallest), verify_s(cfg, rates, smallest)
    needed = rates.baseline_s + one + verify
    minutes = math.ceil(needed / 60)
    budget = given("time_budget_s", f"{cfg.time_budget_s:g}", "--time-budget")
    return (
        f"{budget} s can't hold one candidate and the verification of {cfg.model}: measured here, the "
        f"baseline takes {rates.baseline_s:.0f} s, one screening trial about {one:.0f} s and the "
        f"verification about {verify:.0f} s even at the smallest sizes ({smallest.screen_rounds} rounds × "
        f"{smallest.screen_new_tokens} tokens, {smallest.screen_tokens} and {smallest.eval_tokens} "
        f"evaluation tokens), so the search needs about {minutes} min; "
        f"give {given('time_budget', f'{minutes + 1}m')}"
    )


def describe(plan: Plan) -> str:
    """One log line: the expected costs and what the budget holds."""
    screens = max(1, int((plan.available_s - plan.reserve_s) // plan.screen_s)) if plan.screen_s else 1
    line = (
        f"plan: one screening trial ≈ {plan.screen_s:.0f} s, a finalist ≈ {plan.final_s:.0f} s, the "
        f"verification ≈ {plan.verify_s:.0f} s"
        + (f", speculation on the winner ≈ {plan.speculate_s:.0f} s if left" if plan.speculate_s else "")
        + f"; {plan.available_s:.0f} s left hold about {screens} screen(s), {plan.finalists} finalist(s) "
        "and the verification"
    )
    if plan.scaled:
        line += "; scaled down to fit: " + "; ".join(plan.scaled)
    return line
