"""The optimize config: goals parsed and checked before anything runs; one key per search."""

from __future__ import annotations

import pytest

from unbottle.core.errors import ConfigError
from unbottle.optimizer.config import OptimizeConfig


def test_default_guard_is_one_percent_perplexity_on_the_ci_bound():
    goals = OptimizeConfig().guard()
    assert [str(g) for g in goals] == ["perplexity:percent-max-degradation=1"]


def test_a_task_adds_the_one_point_accuracy_goal():
    goals = OptimizeConfig(task="sports_understanding").guard()
    assert [str(g) for g in goals] == [
        "perplexity:percent-max-degradation=1",
        "accuracy:max-degradation=1",
    ]


@pytest.mark.parametrize(
    ("goals", "task", "message"),
    [
        (
            ("perplexity:percent-max-degradation=1", "perplexity:percent-max-degradation=3"),
            None,
            "contradict",
        ),
        (("accuracy:max-degradation=1",), None, "needs a task"),
        (("perplexity:percent-min-improvement=1",), None, "no speed optimisation can promise"),
        (("decode.tokens_per_s:percent-min-improvement=10",), None, "chosen with objective"),
        (("perplexity:threshold=0.5",), None, "always > 1"),
        (("perplexity<1%",), None, "expected METRIC:KIND=VALUE"),
    ],
)
def test_bad_goals_are_refused_with_the_fix(goals, task, message):
    with pytest.raises(ConfigError, match=message):
        OptimizeConfig(goals=goals, task=task)


def test_unknown_objective_lists_the_allowed_ones():
    with pytest.raises(
        ConfigError,
        match="allowed for a causal LM: decode, ttft, latency, prefill, throughput, goodput, size, memory",
    ):
        OptimizeConfig(objective="speed")


def test_search_key_ignores_budget_and_limits_but_not_what_is_measured():
    a = OptimizeConfig(time_budget_s=100, max_trials=2)
    b = OptimizeConfig(time_budget_s=900, max_trials=None, memory_limit_mib=1000)
    assert a.search_key() == b.search_key()
    assert a.search_key() != OptimizeConfig(eval_tokens=8192).search_key()
    assert a.search_key() != OptimizeConfig(candidates=("wo-int8",)).search_key()


def test_screen_evaluates_fewer_tokens_than_the_finalists():
    cfg = OptimizeConfig(screen_tokens=256, eval_tokens=4096)
    assert cfg.eval_settings("screen")["eval_tokens"] == 256
    assert cfg.eval_settings("screen")["window"] == 32  # 8 windows at least: an interval over 2 says nothing
    assert cfg.eval_settings("full")["eval_tokens"] == 4096
    assert cfg.eval_settings("full")["window"] == 512  # 8 windows of the model's usual context
    held_out = cfg.eval_settings("held_out")
    assert (held_out["start_token"], held_out["eval_tokens"]) == (4096, 4096)
    assert cfg.ab_settings("screen")["rounds"] < cfg.ab_settings("full")["rounds"]


def test_workload_parses_the_request_shape_and_fills_the_default():
    from unbottle.optimizer.config import DEFAULT_WORKLOAD, parse_workload

    assert parse_workload("prompt=512,new=128") == (512, 128)
    assert parse_workload(" new=32 ") == (DEFAULT_WORKLOAD[0], 32)
    assert parse_workload("") == DEFAULT_WORKLOAD
    cfg = OptimizeConfig(model="tiny-llama")
    assert (cfg.prompt_length, cfg.new_tokens) == DEFAULT_WORKLOAD


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("prompt=512,out=3", "'out=3' is not understood"),
        ("prompt:512", "'prompt:512' is not understood"),
        ("prompt=abc", "prompt='abc' is not a number"),
        ("new=1", "new must be at least 2"),
        ("prompt=0", "prompt must be at least 1"),
    ],
)
def test_a_bad_workload_names_the_part_and_the_form_allowed(text, why):
    from unbottle.optimizer.config import parse_workload

    with pytest.raises(ConfigError) as caught:
        parse_workload(text)
    message = str(caught.value)
    assert why in message and f"workload={text!r} given" in message and "prompt=512,new=128" in message
