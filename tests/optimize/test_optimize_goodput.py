"""``unbottle optimize --objective goodput``: the search judged under load (the serve scenario's
requests/s meeting the latency objectives), end to end on tiny-llama in real workers.

The baseline is slowed (``slow:baseline``), so the candidate serves more requests per second on any
host; the objectives are loose, so goodput counts every completed request.
"""

from __future__ import annotations

import pytest

from unbottle.core.errors import ConfigError
from unbottle.optimizer.baseline import check_load
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.search import Search
from unbottle.optimizer.trial import FAULT_ENV
from unbottle.store import Store

LOAD = {"rate": 200.0, "serve_requests": 4, "prompt_length": 8, "new_tokens": 8, "threads": 1}
SMALL = {"eval_tokens": 512, "screen_tokens": 256, "full_rounds": 3, "finalists": 1}


def test_goodput_is_screened_and_verified_under_load(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "slow:baseline")
    cfg = OptimizeConfig(
        model="tiny-llama", objective="goodput", candidates=("precision",), slo_ttft_s=30.0, slo_tpot_s=30.0,
        **LOAD, **SMALL,
    )  # fmt: skip
    doc = Search(cfg, Store(), tmp_path / "out").run()
    assert doc["objective"]["metric"] == "serve.goodput"
    assert doc["winner"] is not None, doc["verdict"]
    verify = doc["verification"]["metrics"]
    assert {"serve.goodput", "serve.ttft_p90", "serve.tpot", "decode.tokens_per_s"} <= set(verify)
    assert doc["winner"]["gain"][1] > 1.0


def test_a_baseline_that_serves_no_request_within_the_objectives_is_refused():
    cfg = OptimizeConfig(model="tiny-llama", objective="goodput", slo_tpot_s=1e-9, **LOAD, **SMALL)
    with pytest.raises(ConfigError, match="goodput 0.*give a lower (--)?rate or looser objectives"):
        check_load(cfg, {"rates": {"serve.goodput": 0.0, "serve.completed": 3.5}})
    check_load(cfg, {"rates": {"serve.goodput": 0.5}})  # some requests within the objectives: measurable
    check_load(OptimizeConfig(model="tiny-llama"), {"rates": {}})  # other objectives: not asked
    with pytest.raises(ConfigError, match="rate"):
        OptimizeConfig(objective="goodput", rate=0)


def test_the_search_stops_after_a_baseline_with_no_goodput(tmp_path, fake_workers):
    cfg = OptimizeConfig(model="tiny-llama", objective="goodput", **LOAD, **SMALL)  # canned rates: no goodput
    with pytest.raises(ConfigError, match="goodput 0"):
        Search(cfg, Store(), tmp_path / "out").run()
    assert fake_workers.functions()[-1] == "baseline"  # no candidate was started
