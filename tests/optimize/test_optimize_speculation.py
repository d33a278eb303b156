"""The search's speculation stage: kept only on a measured gain with identical greedy output; end to
end on tiny-llama, and its decision rule on canned trial outcomes."""

from __future__ import annotations

import json
from pathlib import Path

from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.result import SPECULATION_FILE, speculation_line, winner_folder
from unbottle.optimizer.search import Search
from unbottle.optimizer.speculation import judge_speculation, speculate
from unbottle.optimizer.trial import FAULT_ENV
from unbottle.store import Store

SETTINGS = {
    "model": "tiny-llama",
    "objective": "decode",
    "threads": 1,
    "screen_tokens": 256,
    "eval_tokens": 1024,
    "screen_rounds": 3,
    "full_rounds": 6,
    "screen_new_tokens": 8,
    "new_tokens": 12,
    "time_budget_s": 900,
    "candidates": ("wo-int8",),
}


def _outcome(pct: tuple[float, float, float], match=(4, 4), declined: str | None = None) -> dict:
    speed = {"higher_is_better": True, "pct": dict(zip(("point", "ci_low", "ci_high"), pct, strict=True))}
    result = {"match": list(match), "comparisons": {"decode.tokens_per_s": speed}, "acceptance": 0.6,
              "tokens_per_step": 1.8, "rounds": {}}  # fmt: skip
    if declined:
        result = {"match": list(match), "declined": declined}
    return {"status": "ok", "reason": None, "result": result}


def test_kept_only_when_the_whole_interval_is_a_gain():
    cfg = OptimizeConfig(model="tiny-llama")
    kept = judge_speculation(cfg, _outcome((30.0, 12.0, 50.0)))
    assert kept["adopted"] and kept["reason"] == "×1.30 [1.12, 1.50] on decode.tokens_per_s"
    assert "60% of drafted tokens kept" in speculation_line(kept) and "4/4 held-out" in speculation_line(kept)
    unsure = judge_speculation(cfg, _outcome((5.0, -2.0, 12.0)))
    assert not unsure["adopted"] and unsure["reason"].startswith("no measured gain: ×1.05 [0.98, 1.12]")
    slower = judge_speculation(cfg, _outcome((-20.0, -25.0, -15.0)))
    assert not slower["adopted"] and "declined: no measured gain: ×0.80" in speculation_line(slower)
    differed = judge_speculation(cfg, _outcome((0, 0, 0), (3, 4), "the greedy tokens differed on 1 of 4"))
    assert not differed["adopted"] and differed["reason"].startswith("the greedy tokens differed")
    assert "ran out" in judge_speculation(cfg, None)["reason"]
    crashed = {"status": "crashed", "reason": "signal 11", "result": None}
    assert judge_speculation(cfg, crashed)["reason"] == "its trial ended crashed: signal 11"


def test_the_stage_serves_decode_step_objectives_at_batch_one_only():
    assert OptimizeConfig(model="tiny-llama").speculation_applies()
    assert OptimizeConfig(model="tiny-llama", objective="latency").speculation_applies()
    assert not OptimizeConfig(model="tiny-llama", objective="ttft").speculation_applies()
    assert not OptimizeConfig(model="tiny-llama", objective="size").speculation_applies()
    assert not OptimizeConfig(model="tiny-llama", batch_size=4).speculation_applies()


def test_the_winner_is_tried_with_speculation_after_its_verification(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "slow:baseline")
    cfg = OptimizeConfig(**SETTINGS)
    search = Search(cfg, Store(), tmp_path / "out")
    doc = search.run()
    assert doc["outcome"] == "goal-met", doc["verdict"]
    assert search.plan is not None and search.plan.speculate_s > 0
    spec = doc["speculation"]
    assert spec["drafter"] == "lookup" and "speculative decoding (prompt lookup)" in doc["verdict"]
    recorded = Store().trials(search.key)["speculate:wo-int8"]
    assert recorded["status"] == "ok", recorded["reason"]
    assert spec["match"] == [4, 4] and spec["plain_match"] == [4, 4]  # torch: the reference is plain decoding
    assert spec["adopted"] == (spec["gain"][1] > 1.0) and 0.0 <= spec["acceptance"] <= 1.0
    assert len(spec["rounds"]["order"]) == 6 and spec["rounds"]["blocks"] == [3, 3]
    saved = tmp_path / "out" / SPECULATION_FILE
    assert saved.exists() == spec["adopted"]
    # a resumed search reads the verification from the store: its staged folder is published by now
    verify = Store().trials(search.key)["verify:wo-int8"]
    assert not Path(verify["result"]["output"]).exists()
    assert winner_folder(search, {"trial": verify}) == (tmp_path / "out").resolve()
    if spec["adopted"]:
        assert json.loads(saved.read_text())["drafter"] == "lookup"
    # a runtime whose speculative tokens drift is declined before any speed is measured
    monkeypatch.setenv(FAULT_ENV, "worse:speculate")
    drifting = speculate({"config": cfg.to_dict(), "output": str(tmp_path / "out")})
    assert drifting == {
        "match": [0, 4],
        "plain_match": [4, 4],
        "declined": "the greedy tokens differed on 4 of 4 held-out prompts",
    }


def test_a_runtime_that_cannot_speculate_exactly_is_declined_with_its_reason(tmp_path, monkeypatch):
    from unbottle.runtime import speculative

    def refuse(model, kind, draft=None):
        raise speculative.ConfigError("this model keeps a cache that can't be rolled back")

    monkeypatch.setattr("unbottle.optimizer.speculation.check_speculative", refuse)
    cfg = OptimizeConfig(**SETTINGS)
    out = speculate({"config": cfg.to_dict(), "output": "tiny-llama"})
    assert out == {"declined": "this model keeps a cache that can't be rolled back"}


def test_short_of_time_it_checks_exactness_but_measures_nothing():
    cfg = OptimizeConfig(**SETTINGS)
    out = speculate({"config": cfg.to_dict(), "output": "tiny-llama", "budget_s": 3.0, "expected_s": 40.0})
    assert out == {"declined": "not measured: 3 s of the time budget were left and measuring it takes about "
                   "40 s; give a longer --time-budget"}  # fmt: skip
