"""Interleaved A/B: identical models are not called different; a 20%-slower model is found."""

from __future__ import annotations

import copy
import dataclasses
import functools
import time

import pytest

from unbottle.comparison.ab import AB_METRICS, ABConfig, ABRounds, run_ab
from unbottle.comparison.speed import compare_rounds, not_compared
from unbottle.core.errors import ConfigError
from unbottle.sources import Loaded

FAST = ABConfig(rounds=10, new_tokens=8, threads=1, warmup=1)


def slowed(loaded: Loaded, fraction: float) -> Loaded:
    """A copy whose every forward sleeps ``fraction`` of the time the forward took."""
    model = copy.deepcopy(loaded.model)
    original = model.forward

    @functools.wraps(original)  # keeps the signature (cache keyword, logits_to_keep) visible
    def forward(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        time.sleep(fraction * (time.perf_counter() - start))
        return out

    model.forward = forward
    return Loaded(model, loaded.tokenizer, loaded.info)


@pytest.mark.alone
def test_a_vs_a_speed_ci_contains_one_in_at_least_18_of_20(tiny_llama):
    contains = 0
    for seed in range(20):
        rounds = run_ab(
            tiny_llama, tiny_llama, ABConfig(rounds=10, new_tokens=8, threads=1, warmup=1, seed=seed)
        )
        tps = compare_rounds(rounds)["decode.tokens_per_s"]
        ratio_lo, ratio_hi = 1 + tps.pct.ci_low / 100, 1 + tps.pct.ci_high / 100
        contains += ratio_lo <= 1.0 <= ratio_hi
    assert contains >= 18, f"A-vs-A CI contained 1.0 in only {contains} of 20 repetitions"


@pytest.mark.alone
def test_b_slowed_by_20_percent_is_found_worse_nearly_every_time(tiny_llama):
    slow = slowed(tiny_llama, 0.2)
    # Three repeats per round: a round's median then shrugs off a single preempted repeat; 16 rounds of
    # 32-token repeats keep one disturbed stretch of the machine from hiding a 20% slowdown.
    config = ABConfig(rounds=16, repeats_per_round=3, new_tokens=32, threads=1, warmup=1)
    verdicts = []
    for _ in range(20):
        cmp = compare_rounds(run_ab(tiny_llama, slow, config))
        verdicts.append((cmp["decode.tokens_per_s"].verdict, cmp["decode.token_latency"].verdict))
    # A 95% CI has no power guarantee against bursts of load from other machines' work (seen on this
    # shared host: single rounds at 0.85x and 2.3x of a steady 1.45x); 18 of 20 is 90% power at 20%.
    for i, metric in enumerate(("tokens/s", "token latency")):
        worse = sum(v[i] == "worse" for v in verdicts)
        assert worse >= 18, f"{metric}: found worse in only {worse} of 20: {verdicts}"
    assert not any("better" in v for v in verdicts), verdicts


def test_rounds_alternate_order_and_keep_one_value_per_round(tiny_llama):
    rounds = run_ab(tiny_llama, tiny_llama, ABConfig(rounds=4, new_tokens=4, threads=1, warmup=0))
    assert rounds.order == ["AB", "BA", "AB", "BA"]
    assert set(rounds.a) == {
        "decode.tokens_per_s",
        "decode.token_latency",
        "decode.ttft",
        "decode.request_latency",
    }
    assert all(len(v) == 4 for v in [*rounds.a.values(), *rounds.b.values()])
    for side in (rounds.a, rounds.b):  # the whole request holds its first token and 3 later steps
        for i in range(4):
            assert (
                side["decode.request_latency"][i]
                >= side["decode.ttft"][i] + 2 * side["decode.token_latency"][i]
            )


def test_rounds_rebuilt_from_stored_measurements_give_the_same_comparison(tiny_llama):
    rounds = run_ab(tiny_llama, tiny_llama, ABConfig(rounds=5, new_tokens=4, threads=1, warmup=0))
    again = ABRounds.from_measurements(rounds.config, rounds.to_measurements(), rounds.order)
    assert compare_rounds(again) == compare_rounds(rounds)


@pytest.mark.parametrize("scenario", ["prefill", "generate"])
def test_other_scenarios_compare_latency_and_throughput(tiny_llama, scenario):
    rounds = run_ab(tiny_llama, tiny_llama, ABConfig(scenario=scenario, rounds=3, new_tokens=4, threads=1))
    assert set(compare_rounds(rounds)) == {f"{scenario}.latency", f"{scenario}.tokens_per_s"}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"scenario": "train"}, "allowed: decode, prefill, generate"),
        ({"rounds": 2}, "rounds=2 given"),
        ({"batch_size": 0}, "batch_size=0 given"),
        ({"threads": 10_000}, "threads=10000 given"),
    ],
)
def test_ab_config_rejects_bad_values(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        ABConfig(**kwargs)


def test_rounds_in_blocks_widen_the_interval_to_each_blocks_own():
    config = ABConfig(rounds=5)
    first = ABRounds(
        config,
        {"decode.tokens_per_s": [10.0, 10.2, 9.9, 10.1, 10.0]},
        {"decode.tokens_per_s": [20.0, 20.3, 19.8, 20.1, 20.2]},
        ["AB", "BA"] * 2 + ["AB"],
    )
    second = ABRounds(
        config,
        {"decode.tokens_per_s": [10.0, 10.1, 9.8, 10.2, 10.0]},
        {"decode.tokens_per_s": [25.0, 25.2, 24.9, 25.1, 25.3]},
        ["AB", "BA"] * 2 + ["AB"],
    )
    joined = ABRounds.joined([first, second])
    assert joined.blocks == [5, 5] and joined.config.rounds == 10
    blocked = compare_rounds(joined)["decode.tokens_per_s"].pct
    pooled = compare_rounds(dataclasses.replace(joined, blocks=None))["decode.tokens_per_s"].pct
    each = [compare_rounds(r)["decode.tokens_per_s"].pct for r in (first, second)]
    assert blocked.point == pooled.point
    assert blocked.ci_low <= min(e.ci_low for e in each) and blocked.ci_high >= max(e.ci_high for e in each)
    assert blocked.ci_high - blocked.ci_low > pooled.ci_high - pooled.ci_low
    assert "time blocks" in blocked.method


def test_a_causal_lm_against_a_masked_lm_or_decoding_a_masked_lm_is_refused(tiny_llama):
    from unbottle.models import load

    bert = load("tiny-bert")
    with pytest.raises(ConfigError, match="is a causal-lm model and B .* a masked-lm model"):
        run_ab(tiny_llama, bert, FAST)
    with pytest.raises(ConfigError, match="masked-lm model; the decode scenario generates tokens"):
        run_ab(bert, bert, FAST)


def test_worse_on_too_few_rounds_is_indicative_not_a_regression():
    from unbottle.comparison.document import comparison_document
    from unbottle.comparison.speed import compare_samples

    a = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2]
    b = [80.0, 81.0, 79.0, 80.5, 79.5, 80.2]  # 20% slower, every round
    few = compare_samples("decode.tokens_per_s", "tokens/s", True, a[:3], b[:3], paired=True)
    enough = compare_samples("decode.tokens_per_s", "tokens/s", True, a, b, paired=True)
    assert few.verdict == enough.verdict == "worse"
    doc = comparison_document({"decode.tokens_per_s": few}, [], "A", "B")
    assert doc["regressions"] == [] and doc["indicative_regressions"] == ["decode.tokens_per_s"]
    doc = comparison_document({"decode.tokens_per_s": enough}, [], "A", "B")
    assert doc["regressions"] == ["decode.tokens_per_s"] and doc["indicative_regressions"] == []


def test_serve_rounds_replay_one_stream_and_a_zero_goodput_is_listed_not_compared(tiny_llama):
    config = ABConfig(
        scenario="serve", rounds=3, warmup=0, rate=400.0, serve_requests=4, prompt_length=8, new_tokens=6,
        max_batch=2, slo_tpot_s=1e-9,  # no request can meet it: goodput is 0 on both sides
    )  # fmt: skip
    rounds = run_ab(tiny_llama, tiny_llama, config)
    assert set(rounds.a) == {f"serve.{k}" for k in AB_METRICS["serve"]}
    assert all(len(v) == 3 for v in (*rounds.a.values(), *rounds.b.values()))
    assert rounds.a["serve.goodput"] == [0.0, 0.0, 0.0] and rounds.a["serve.completed"][0] > 0
    cmps = compare_rounds(rounds)
    assert "serve.goodput" not in cmps and not_compared(rounds) == {"serve.goodput": {"a": 0.0, "b": 0.0}}
    assert cmps["serve.ttft_p90"].higher_is_better is False and cmps["serve.throughput"].higher_is_better
    with pytest.raises(ConfigError, match="rate"):
        ABConfig(scenario="serve", rate=0)
