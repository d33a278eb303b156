"""The search with the decode-speed objective end to end: real workers, real interleaved rounds.

Speed on a tiny model is too close to call on a shared host, so the baseline the candidates race
is slowed (``slow:baseline``: a sleep before each of its forward calls): every candidate is then
clearly faster, whatever the host. ``worse:KEY`` spoils a candidate's verified copy, so the
verification's fallback to the next finalist is exercised too.
"""

from __future__ import annotations

from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.search import Search
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
    "new_tokens": 8,
    "time_budget_s": 900,
    "candidates": ("precision", "wo-int8"),
}


def _by_key(doc: dict) -> dict:
    return {t["key"]: t for t in doc["trials"]}


def test_finalists_rank_by_measured_decode_gain_and_a_failed_verification_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "slow:baseline;worse:precision;worse:wo-int8")
    search = Search(OptimizeConfig(**SETTINGS), Store(), tmp_path / "out")
    doc = search.run()
    trials = _by_key(doc)
    finals = [k.split(":", 1)[1] for k in trials if k.startswith("final:")]
    verified = [k.split(":", 1)[1] for k in trials if k.startswith("verify:")]
    assert sorted(finals) == ["precision", "wo-int8"]
    gains = {k: trials[f"final:{k}"]["gain"][0] for k in finals}
    assert all(g > 1.5 for g in gains.values()), gains  # the slowed baseline: both clearly faster
    assert verified == sorted(finals, key=lambda k: -gains[k])  # best first, then the fallback
    assert doc["outcome"] == "goal-missed" and not (tmp_path / "out").exists()
    recorded = Store().trials(search.key)
    assert recorded[f"verify:{verified[0]}"]["status"] == "ok", recorded[f"verify:{verified[0]}"]["reason"]
    rounds = recorded[f"verify:{verified[0]}"]["result"]["rounds"]
    assert rounds["blocks"] == [3, 3] and len(rounds["order"]) == 6
    speed = recorded[f"verify:{verified[0]}"]["result"]["comparisons"]["decode.tokens_per_s"]
    assert "time blocks" in speed["pct"]["method"]
