"""BenchConfig validation, JSON round-trip, and the repeat loop's stopping rule."""

from __future__ import annotations

import itertools

import pytest

from unbottle.benchmarking import BenchConfig
from unbottle.benchmarking.runner import repeat
from unbottle.core.env import logical_cpus
from unbottle.core.errors import ConfigError


def test_bench_config_round_trips_through_json():
    config = BenchConfig(prompt_lengths=(8, 16), batch_sizes=(2,), new_tokens=4, threads=1)
    again = BenchConfig.from_json(config.to_json())
    assert again == config
    assert config.to_dict()["version"] == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"batch_sizes": (1, 0)}, ["batch_sizes contains 0", "positive"]),
        ({"batch_sizes": ()}, ["batch_sizes is empty"]),
        ({"prompt_lengths": (-3,)}, ["prompt_lengths contains -3"]),
        ({"new_tokens": 1}, ["new_tokens=1 given", ">= 2"]),
        ({"min_repeats": 0}, ["min_repeats=0 given"]),
        ({"min_time_s": -1.0}, ["min_time_s=-1.0 given"]),
        ({"scenarios": ("prefil",)}, ["prefil", "allowed: prefill, decode, generate"]),
        ({"device": "tpu"}, ["device='tpu' given", "allowed"]),
    ],
)
def test_bench_config_rejects_bad_values_with_what_is_allowed(kwargs, words):
    with pytest.raises(ConfigError) as info:
        BenchConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_bench_config_rejects_more_threads_than_the_machine_has():
    too_many = logical_cpus() + 1
    with pytest.raises(ConfigError, match=rf"threads={too_many} given.*use 1\.\.{logical_cpus()}"):
        BenchConfig(threads=too_many)
    with pytest.raises(ConfigError, match="threads=0 given"):
        BenchConfig(threads=0)


def _fake_fn(calls: list[int]):
    def fn():
        calls.append(1)
        return {"x": [float(len(calls))]}

    return fn


def test_repeat_meets_minimum_count_when_time_is_short():
    calls: list[int] = []
    samples = repeat(_fake_fn(calls), warmup=2, min_repeats=5, min_time_s=0.0)
    assert len(calls) == 7  # warm-up runs are made but not kept
    assert samples["x"] == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_repeat_meets_minimum_time_when_count_is_small(monkeypatch):
    clock = itertools.count(0.0, 0.25)  # every perf_counter call advances 0.25 s
    monkeypatch.setattr("unbottle.benchmarking.runner.time.perf_counter", lambda: next(clock))
    calls: list[int] = []
    samples = repeat(_fake_fn(calls), warmup=0, min_repeats=1, min_time_s=2.0)
    assert len(samples["x"]) >= 4, "a 2 s minimum at 0.25 s per clock tick needs several repeats"
    assert len(samples["x"]) == len(calls)


def test_repeat_reports_progress_after_every_repeat():
    seen: list[tuple[str, int]] = []
    repeat(_fake_fn([]), 0, 3, 0.0, label="p", progress=lambda label, n, t: seen.append((label, n)))
    assert seen == [("p", 1), ("p", 2), ("p", 3)]
