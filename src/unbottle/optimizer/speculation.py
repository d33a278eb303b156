"""The search's last stage when the objective is decode speed at batch 1: the verified winner with
prompt-lookup speculative decoding (``unbottle.runtime.speculative``), kept only where it measured a
gain.

Speculation changes no weight, so it needs no accuracy guard; what it must not change is the output.
The worker (``speculate``) therefore checks two things on the saved winner, in its own process:

1. **Greedy match**: speculative greedy decoding gives the tokens of ``reference_greedy`` on every one
   of ``SPECULATION_PROMPTS`` prompts no other stage reads (any difference declines it). For torch
   models those are plain greedy decoding's; for an ONNX Runtime model (GenAI builds included),
   greedy decoding whose one-token steps round as a pass over a draft does (its plain one-token steps
   round its attention otherwise, and with int8 activations may pick other tokens; how many prompts
   agree with them is recorded as ``plain_match``).
2. **Speed**: paired rounds of the workload, the winner decoding plainly (A) and speculatively (B), in
   two blocks as the verification runs them; the interval of the objective decides.

The search keeps it when the objective's gain interval lies above 1 (``judge_speculation``), and says
why not otherwise: a runtime that can't speculate exactly (caches that can't roll back; found in
seconds), too little time left after the verification (its time is planned, see
``plan.speculate_s``), a token that differed, or no measured gain
(prompt lookup loses where the output does not repeat its input).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from unbottle.benchmarking import apply_threads
from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import make_timer
from unbottle.comparison.ab import ABConfig, ABRounds, run_ab
from unbottle.comparison.speed import compare_rounds
from unbottle.core.errors import ConfigError
from unbottle.data.prompts import make_prompts
from unbottle.optimizer import judge
from unbottle.optimizer.config import SPECULATION_PROMPTS, OptimizeConfig
from unbottle.optimizer.result import winner_folder
from unbottle.optimizer.trial import block_sizes, injected, load_model
from unbottle.runtime.speculative import (
    check_speculative,
    corpus_followers,
    reference_greedy,
    speculative_greedy,
)

DRAFTER = "lookup"
PROMPT_SEED = 104729  # prompt windows no other stage of the search reads
WORKER = "unbottle.optimizer.speculation:speculate"


def stage(search: Any, verified: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Run the stage on the verified winner that kept the guard (None where the stage doesn't apply
    or nothing was won)."""
    if not search.cfg.speculation_applies():
        return None
    winner = next((v for v in verified if v["guard"] and v["guard"]["passed"]), None)
    if winner is None:
        return None
    key = winner["cand"].key
    expected = search.plan.speculate_s if search.plan is not None else 0.0
    left = max(0.0, search.remaining())
    output = str(winner_folder(search, winner))
    payload = {"key": key, "output": output, "expected_s": expected, "budget_s": left}
    # short of time, it still checks exactness (seconds), but is not recorded: a longer budget retries it
    data = search.trial(
        f"speculate:{key}", WORKER, payload, reserve=-(10**6), record=left >= expected, here=True
    )
    return judge_speculation(search.cfg, data)


def speculate(payload: dict[str, Any]) -> dict[str, Any]:
    """Greedy match on held-out prompts, then the paired A/B of plain against speculative decoding of
    the saved winner at ``payload['output']``; ``declined`` (with the reason) when it can't be exact."""
    cfg = OptimizeConfig.from_dict(payload["config"])
    apply_threads(cfg.threads)
    saved = load_model(payload["output"])
    try:
        check_speculative(saved.model, DRAFTER)
    except ConfigError as exc:
        return {"declined": str(exc)}
    left, needs = payload.get("budget_s", float("inf")), payload.get("expected_s", 0.0)
    if left < needs:
        return {"declined": f"not measured: {left:.0f} s of the time budget were left and measuring it "
                f"takes about {needs:.0f} s; give a longer --time-budget"}  # fmt: skip
    match, plain = greedy_match(saved, cfg, SPECULATION_PROMPTS, spoil=injected("worse", "speculate"))
    if match[0] < match[1]:
        differed = f"the greedy tokens differed on {match[1] - match[0]} of {match[1]} held-out prompts"
        return {"match": match, "plain_match": plain, "declined": differed}
    settings = {**cfg.ab_settings("full"), "scenario": "decode", "speculative": DRAFTER}
    sizes = block_sizes(cfg.full_rounds)
    parts = [run_ab(saved, saved, ABConfig(**{**settings, "rounds": n})) for n in sizes]
    rounds = ABRounds.joined(parts)
    figures = [p.speculation or {} for p in parts]
    return {
        "match": match,
        "plain_match": plain,
        "comparisons": {k: v.to_dict() for k, v in compare_rounds(rounds).items()},
        "acceptance": statistics.mean(f.get("acceptance", 0.0) for f in figures),
        "tokens_per_step": statistics.mean(f.get("tokens_per_step", 1.0) for f in figures),
        "rounds": {"a": rounds.a, "b": rounds.b, "order": rounds.order, "blocks": rounds.blocks},
    }


def greedy_match(loaded: Any, cfg: OptimizeConfig, prompts: int, spoil: bool = False) -> list[list[int]]:
    """[[prompts whose speculative greedy tokens equal ``reference_greedy``'s, prompts], [prompts whose
    reference tokens equal plain one-token decoding's, prompts]]. The two may differ on ONNX Runtime
    models, int8-activation builds above all, whose one-token calls round otherwise
    (``runtime.speculative``). ``spoil``
    (testing): the speculative tokens are changed, as a runtime that drifts would change them."""
    model, timer = loaded.model, make_timer("cpu")
    table = corpus_followers(loaded.tokenizer, model.config.vocab_size)
    same = plain_same = 0
    for i in range(prompts):
        prompt = make_prompts(
            loaded.tokenizer, model.config.vocab_size, 1, cfg.prompt_length, PROMPT_SEED + i
        )
        record: list[Any] = []
        decode_once(model, prompt, cfg.new_tokens, timer, record=record)
        plain = [int(t) for t in torch.cat(record, dim=1)[0]]
        # one-row models (torch): the reference is plain decoding itself
        reference = (
            reference_greedy(model, prompt, cfg.new_tokens) if getattr(model, "min_rows", 1) > 1 else plain
        )
        tokens = speculative_greedy(model, prompt, cfg.new_tokens, timer, table=table)["tokens"]
        if spoil:
            tokens[-1] += 1
        same += tokens == reference
        plain_same += reference == plain
    return [[same, prompts], [plain_same, prompts]]


def judge_speculation(cfg: OptimizeConfig, data: dict[str, Any] | None) -> dict[str, Any]:
    """The stage's entry in the result document: ``adopted`` or ``declined`` with the reason, and the
    measured gain, acceptance and greedy match where there are some."""
    if data is None:
        return {"adopted": False, "reason": "the time budget ran out before it could be measured"}
    if data["status"] != "ok":
        return {"adopted": False, "reason": f"its trial ended {data['status']}: {data['reason']}"}
    result = data["result"]
    out: dict[str, Any] = {"drafter": DRAFTER, "match": result.get("match")}
    out["plain_match"] = result.get("plain_match")
    if "declined" in result:
        return {**out, "adopted": False, "reason": result["declined"]}
    metric = cfg.objective_spec()[1]
    gain = judge.gain(result["comparisons"].get(metric))
    out.update(
        gain=gain,
        metric=metric,
        acceptance=result["acceptance"],
        tokens_per_step=result["tokens_per_step"],
        comparisons=result["comparisons"],
        rounds=result["rounds"],
    )
    if gain is None:
        return {**out, "adopted": False, "reason": f"{metric} was not measured"}
    lo, hi = gain[1], gain[2]
    if lo > 1.0:
        return {**out, "adopted": True, "reason": f"×{gain[0]:.2f} [{lo:.2f}, {hi:.2f}] on {metric}"}
    return {
        **out,
        "adopted": False,
        "reason": f"no measured gain: ×{gain[0]:.2f} [{lo:.2f}, {hi:.2f}] on {metric} "
        f"({100 * result['acceptance']:.0f}% of drafted tokens kept)",
    }
