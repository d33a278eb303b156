"""The plan: trials priced from the baseline's rates, sizes scaled to the budget, or a clear refusal.

The pricing tests use hand-made rates; the search and CLI tests use ``fake_workers`` (conftest), so
nothing here measures a model.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.core.errors import ConfigError
from unbottle.optimizer import plan as planning
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.search import Search
from unbottle.store import Store

# 10 s fixed per worker, 1 s per extra load, 0.05 s per side-token of A/B, 0.02 s per evaluated token
RATES = planning.Rates(
    overhead_s=10.0,
    load_s=1.0,
    ab_unit_s=0.05,
    eval_s_per_token={"screen": 0.02, "full": 0.02},
    baseline_s=30.0,
)
CFG = OptimizeConfig(model="tiny-llama")  # screening 3 × 32 tokens, 1024 tokens; verification 10 × 64, 4096


def _total(sizes: planning.Sizes) -> float:
    return planning.screen_s(CFG, RATES, sizes) + planning.verify_s(CFG, RATES, sizes)


def test_make_plan_keeps_the_configured_sizes_when_they_fit():
    configured = planning.Sizes.of(CFG)
    plan = planning.make_plan(CFG, RATES, _total(configured) + 1)
    assert plan.sizes == configured and plan.scaled == ()
    assert plan.screen_s < plan.verify_s  # 3 × 32 tokens and 1024 tokens against 10 × 64 and 4096
    assert plan.finalists == 0  # 1 s spare holds no finalist


def test_make_plan_scales_screening_down_before_the_verification():
    configured = planning.Sizes.of(CFG)
    plan = planning.make_plan(CFG, RATES, _total(configured) - 15)
    assert (plan.sizes.screen_rounds, plan.sizes.screen_new_tokens, plan.sizes.screen_tokens) == (3, 16, 512)
    assert (plan.sizes.full_rounds, plan.sizes.eval_tokens) == (10, 4096)  # verification untouched
    assert "screening evaluation tokens: 512 (configured 1024)" in plan.scaled
    assert plan.screen_s + plan.verify_s <= plan.available_s


def test_make_plan_scales_the_verification_once_screening_is_at_its_smallest():
    smallest = planning.Sizes(3, 16, 512, 5, 2048)
    plan = planning.make_plan(CFG, RATES, _total(smallest) + 1)
    assert plan.sizes == smallest
    assert len(plan.scaled) == 4  # new tokens, screening tokens, verification rounds and tokens
    assert "verification A/B rounds: 5 (configured 10)" in plan.scaled


def test_make_plan_counts_the_finalists_the_spare_time_holds():
    configured = planning.Sizes.of(CFG)
    one_final = planning.final_s(CFG, RATES, configured)
    speculation = planning.speculate_s(CFG, RATES, configured)
    assert speculation > 0  # a decode objective at batch 1 ends by trying speculative decoding
    plan = planning.make_plan(CFG, RATES, _total(configured) + 1.5 * one_final)
    assert plan.finalists == 1 and plan.speculate_s == speculation
    assert plan.reserve_s == pytest.approx(plan.verify_s + one_final)  # it runs with the time left
    ttft = dataclasses.replace(CFG, objective="ttft")
    assert planning.speculate_s(ttft, RATES, configured) == 0


def test_make_plan_refuses_an_impossible_budget_with_the_budget_that_fits():
    smallest = planning.Sizes(3, 16, 512, 5, 2048)
    with pytest.raises(ConfigError) as caught:
        planning.make_plan(CFG, RATES, _total(smallest) - 1)
    minutes = math.ceil((RATES.baseline_s + _total(smallest)) / 60)
    assert f"needs about {minutes} min; give time_budget={minutes + 1}m" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_rates_from_baseline_split_the_trial_into_its_measured_parts(fake_workers):
    base = fake_workers.baseline_result(busy=False)
    rates = planning.Rates.from_baseline(20.0, base, CFG)
    assert rates.overhead_s == pytest.approx(20.0 - 1.0 - 4.0 - 2.0 - 0.5)
    assert rates.load_s == 0.5
    assert rates.ab_unit_s == pytest.approx(2.0 / (2 * 4 * 32))  # 2 sides, 3 rounds + warm-up, 32 tokens
    assert rates.eval_s_per_token == {"screen": pytest.approx(1 / 1024), "full": pytest.approx(4 / 4096)}


def _search(budget_s: float, lines: list[str], **kw) -> Search:
    cfg = OptimizeConfig(model="tiny-llama", candidates=("wo-int8",), time_budget_s=budget_s, threads=2, **kw)
    return Search(cfg, Store(), Store().root / "out", log=lines.append)


def test_a_tight_budget_screens_at_smaller_sizes_and_a_resumed_search_plans_the_same(fake_workers):
    fake_workers.baseline_s, fake_workers.eval_s = 60.0, {"screen": 10.0, "full": 40.0}
    first_lines: list[str] = []
    doc = _search(170, first_lines).run()
    assert doc["plan"]["sizes"]["screen_tokens"] == 512 and doc["plan"]["scaled"]
    screen = next(p for name, p in fake_workers.calls if name == "measure")
    assert screen["config"]["screen_tokens"] == 512  # the worker gets the planned sizes
    assert any("scaled down to fit" in line for line in first_lines)

    again: list[str] = []
    resumed = _search(170, again).run()
    assert fake_workers.functions().count("baseline") == 1
    assert "baseline: recorded earlier (ok); not repeated" in again
    assert resumed["plan"] == doc["plan"]


def test_an_impossible_budget_is_refused_after_the_baseline_and_before_any_candidate(fake_workers):
    fake_workers.baseline_s, fake_workers.eval_s = 400.0, {"screen": 40.0, "full": 160.0}
    with pytest.raises(ConfigError, match=r"needs about \d+ min; give time_budget=\d+m"):
        _search(780, []).run()
    assert fake_workers.functions() == ["baseline"]


def test_the_cli_exits_non_zero_with_the_budget_that_fits(fake_workers, tmp_path):
    fake_workers.baseline_s, fake_workers.eval_s = 400.0, {"screen": 40.0, "full": 160.0}
    args = ["--candidate", "wo-int8", "--time-budget", "13m", "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(app, ["optimize", "tiny-llama", *args])
    assert result.exit_code == 2, result.output
    suggested = re.search(r"give --time-budget (\d+)m", " ".join(result.output.split()))
    assert suggested and int(suggested.group(1)) > 13
    assert Store().get_run("last").status == "failed"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-trials", "0"], "--max-trials 0 given; allowed: 1 or more"),
        (["--time-budget", "30s"], "needs at least 60 s"),
    ],
)
def test_the_cli_refuses_a_search_that_could_try_nothing_up_front(fake_workers, tmp_path, flags, message):
    result = CliRunner().invoke(app, ["optimize", "tiny-llama", *flags, "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert fake_workers.calls == []


def test_paired_samples_compares_a_shrunk_evaluation_on_the_baselines_first_windows(tiny_llama):
    from unbottle.comparison.accuracy import compare_evals
    from unbottle.evaluation import EvalConfig, evaluate
    from unbottle.optimizer.trial import paired_samples

    base = evaluate(tiny_llama, EvalConfig(eval_tokens=2048, window=512, stride=512))
    small = evaluate(tiny_llama, EvalConfig(eval_tokens=1024, window=512, stride=512))
    a, b = paired_samples(base, small)
    assert a[0].sample_ids == b[0].sample_ids == ["tokens[0:512]", "tokens[511:1023]"]
    assert b[0].scores == small[0].scores[:2]  # the shorter last window of the small run is left out
    same = compare_evals(a, b)["perplexity"]
    assert same.pct.point == pytest.approx(0.0, abs=1e-6)  # the same model on the same windows


def test_a_long_prompt_is_priced_per_round_not_per_new_token(fake_workers):
    base = fake_workers.baseline_result(busy=False)
    base["rates"] = {"decode.ttft": 0.5, "decode.token_latency": 0.01}  # 0.5 s prompt, 31 × 0.01 s steps
    rates = planning.Rates.from_baseline(20.0, base, CFG)
    share = 0.5 / (0.5 + 31 * 0.01)
    assert rates.ab_prompt_s == pytest.approx(share * 2.0 / 8)  # the screen A/B: 8 side-rounds in 2 s
    assert rates.ab_unit_s == pytest.approx((1 - share) * 2.0 / (8 * 32))
    # the screen A/B costs what it cost; the verification's 64 new tokens double the steps, not the prompt
    sizes = planning.Sizes.of(CFG)
    screen = planning._ab_s(CFG, rates, sizes.screen_rounds, sizes.screen_new_tokens)
    assert screen == pytest.approx(2.0)
    full = planning._ab_s(CFG, rates, 3, 64)
    assert full == pytest.approx(2.0 * share + 2 * 2.0 * (1 - share))
