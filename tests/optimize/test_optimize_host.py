"""A busy machine is detected, re-measured, warned about, and its baseline never reused.

The disturbance is injected (``fake_workers`` reports other processes holding every core, or the
worker's ``busy:baseline`` fault hook does); no load is generated.
"""

from __future__ import annotations

import pytest

from unbottle.comparison.noise import disturbed_above
from unbottle.optimizer import host
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.search import Search
from unbottle.optimizer.trial import FAULT_ENV
from unbottle.optimizer.trial import baseline as measure_baseline
from unbottle.store import Store

METRIC = "decode.tokens_per_s"


def _base(others: float, spread: float, cpus: int = 2) -> dict:
    return {"host": {"cpus": cpus, "others_cores": others}, "screen_noise_floor_pct": {METRIC: spread}}


def test_disturbance_flags_other_processes_holding_the_cores_the_threads_need():
    busy = host.disturbance(_base(others=1.0, spread=2.0), METRIC, threads=2, floor_pct=None)
    assert busy is not None and busy["free_cores"] == 1
    assert "other processes kept 1.0 of the 2 cores busy" in busy["reasons"][0]
    assert host.disturbance(_base(others=1.0, spread=2.0), METRIC, threads=1, floor_pct=None) is None
    assert "threads=1" in host.advice(busy, threads_fixed=False)
    assert "threads" not in host.advice(busy, threads_fixed=True)


def test_disturbance_judges_the_a_vs_a_spread_against_the_stored_floor_else_an_absolute_bound():
    quiet = _base(others=0.0, spread=8.0)
    assert host.disturbance(quiet, METRIC, 2, floor_pct=None) is None  # 8% < 25% with no floor
    assert disturbed_above(1.0) == 11.0  # max(3 × 1%, 1% + 10 points)
    assert host.disturbance(quiet, METRIC, 2, floor_pct=1.0) is None
    wild = host.disturbance(_base(others=0.0, spread=30.0), METRIC, 2, floor_pct=5.0)
    assert wild is not None and wild["bound_pct"] == 15.0
    assert "stored noise floor is 5.0%" in wild["reasons"][0]


def _search(lines: list[str]) -> Search:
    cfg = OptimizeConfig(model="tiny-llama", candidates=("wo-int8",), time_budget_s=600, threads=2)
    return Search(cfg, Store(), Store().root / "out", log=lines.append)


def test_a_disturbed_baseline_is_measured_again_and_kept_when_the_second_is_quiet(fake_workers):
    fake_workers.busy = [True, False]
    lines: list[str] = []
    search = _search(lines)
    doc = search.run()
    assert fake_workers.functions().count("baseline") == 2
    assert any("the baseline looks disturbed (other processes kept 2.0 of the 2 cores" in x for x in lines)
    assert doc["host_busy"] is None and not doc["verdict"].startswith("WARNING")
    recorded = Store().trials(search.key)
    assert recorded["baseline:disturbed-1"]["host_busy"]["others_cores"] == 2.0
    assert "host_busy" not in recorded["baseline"]


def test_a_baseline_disturbed_twice_is_warned_about_and_not_reused_by_a_rerun(fake_workers):
    fake_workers.busy = [True, True]
    lines: list[str] = []
    search = _search(lines)
    doc = search.run()
    assert doc["verdict"].startswith("WARNING: measured on a busy host (other processes kept 2.0 of the 2")
    assert doc["host_busy"]["free_cores"] == 1 and "--threads" not in doc["host_busy"]["advice"]  # fixed
    rows = [r for r in doc["trials"] if r["stage"] == "baseline"]
    assert [r["key"] for r in rows] == ["baseline:disturbed-1", "baseline:disturbed-2"]
    assert all(r["host_busy"]["reasons"] for r in rows)
    assert "baseline" not in Store().trials(search.key)

    rerun: list[str] = []
    again = _search(rerun).run()  # the machine is quiet now
    assert fake_workers.functions().count("baseline") == 3
    assert any(x.startswith("baseline: running") for x in rerun)
    assert not any("baseline: recorded earlier" in x for x in rerun)
    assert again["host_busy"] is None
    assert "baseline" in Store().trials(search.key)


def test_the_baseline_worker_reports_the_cores_other_processes_used(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "busy:baseline")
    cfg = OptimizeConfig(model="tiny-llama", threads=1, screen_tokens=256, eval_tokens=512)
    result = measure_baseline({"config": cfg.to_dict()})
    load = result["host"]
    assert load["injected"] == "busy" and load["others_cores"] == float(load["cpus"]) >= 1
    assert load["seconds"] > 0
    assert result["reload_s"] > 0 and result["screen_noise_floor_pct"][METRIC] >= 0
    busy = host.disturbance(result, METRIC, threads=1, floor_pct=None)
    assert busy is not None and busy["injected"] == "busy"


@pytest.mark.parametrize("objective", ["size", "memory"])
def test_a_busy_host_does_not_matter_to_objectives_that_measure_no_speed(fake_workers, objective):
    fake_workers.busy = [True]
    cfg = OptimizeConfig(model="tiny-llama", candidates=("wo-int8",), objective=objective, threads=2)
    search = Search(cfg, Store(), Store().root / "out")
    search.run()
    assert fake_workers.functions().count("baseline") == 1 and search.host_busy is None
