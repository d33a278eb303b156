"""EvalConfig validates and round-trips; evaluate runs what the config asks for, on one text."""

from __future__ import annotations

from pathlib import Path

import pytest

from unbottle.core.errors import ConfigError
from unbottle.evaluation import EvalConfig, EvalResult, evaluate
from unbottle.evaluation.corpus import default_text
from unbottle.sources import Loaded


def test_eval_config_round_trips_through_json() -> None:
    config = EvalConfig(eval_text="book.txt", task="sports_understanding", max_items=None, reference="x")
    assert EvalConfig.from_json(config.to_json()) == config
    assert EvalConfig().to_dict()["eval_tokens"] == 16384


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(eval_tokens=0), "eval_tokens=0 given"),
        (dict(window=-1), "window=-1 given"),
        (dict(window=1, stride=1, eval_tokens=10), "at least 2 tokens"),
        (dict(stride=513), "stride=513 is larger than window=512"),
        (dict(max_items=0), "max_items=0 given"),
        (dict(batch_size=0), "batch_size=0 given"),
        (dict(eval_tokens=100), "eval_tokens=100 is less than one window (512)"),
    ],
)
def test_eval_config_rejects_bad_values(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig(**kwargs)
    assert words in str(info.value)


def test_evaluate_runs_perplexity_then_task_then_agreement(tiny_llama: Loaded, tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_text(default_text()[0][:3000], encoding="utf-8")
    config = EvalConfig(
        eval_text=str(tmp_path / "book.txt"),
        eval_tokens=600,
        window=128,
        stride=128,
        task="cause_and_effect/one_sentence",
        max_items=10,
    )
    only_ppl = evaluate(
        tiny_llama, EvalConfig(eval_text=config.eval_text, eval_tokens=600, window=128, stride=128)
    )
    assert [r.metric for r in only_ppl] == ["perplexity"]
    results = evaluate(tiny_llama, config, reference_loaded=tiny_llama)
    assert [r.metric for r in results] == [
        "perplexity",
        "accuracy",
        "kl_divergence",
        "top1_agreement",
        "greedy_match_length",
    ]
    ppl, acc, kl = results[0], results[1], results[2]
    assert ppl.value == only_ppl[0].value and ppl.details["corpus"] == f"file {tmp_path / 'book.txt'}"
    assert acc.details["n_items"] == 10 and acc.details["task"] == "cause_and_effect/one_sentence"
    assert kl.sample_ids == ppl.sample_ids and kl.value == pytest.approx(0.0, abs=1e-6)
    for r in results:
        assert EvalResult.from_dict(r.to_dict()) == r
        assert r.to_measurement().samples == r.scores and r.seconds > 0


def test_evaluate_loads_the_reference_named_in_the_config(tiny_llama: Loaded) -> None:
    config = EvalConfig(eval_tokens=256, window=128, stride=128, reference="tiny-llama")
    results = evaluate(tiny_llama, config)
    assert [r.metric for r in results][1:] == ["kl_divergence", "top1_agreement", "greedy_match_length"]
    assert results[1].value == pytest.approx(0.0, abs=1e-6)
