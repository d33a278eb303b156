"""Checks of ``summarize``: every field against numpy on known data, JSON-readiness and speed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from unbottle.core.errors import ConfigError
from unbottle.stats import Summary, bootstrap_ci, summarize


def test_summarize_percentiles_match_numpy_on_known_data():
    s = summarize(np.arange(1.0, 101.0))  # 1..100
    assert (s.p50, s.p90, s.p99) == pytest.approx((50.5, 90.1, 99.01))
    assert (s.min, s.max, s.n) == (1.0, 100.0, 100)


def test_summarize_fields_match_numpy_on_lognormal():
    x = np.random.default_rng(0).lognormal(size=1000)
    s = summarize(x, confidence=0.9, seed=1)
    assert s.mean == pytest.approx(np.mean(x))
    assert s.stdev == pytest.approx(np.std(x, ddof=1))
    assert [s.p50, s.p90, s.p99] == pytest.approx(list(np.percentile(x, [50, 90, 99])))
    assert (s.ci_low, s.ci_high) == bootstrap_ci(x, np.median, 0.9, 2000, 1)
    assert s.ci_low < s.p50 < s.ci_high
    assert s.confidence == 0.9


def test_summarize_single_sample_has_zero_stdev_and_point_ci():
    s = summarize([0.5])
    assert (s.n, s.stdev, s.ci_low, s.ci_high, s.p99) == (1, 0.0, 0.5, 0.5, 0.5)


def test_summary_to_dict_is_json_ready_and_round_trips():
    s = summarize([1.0, 2.0, 4.0, 8.0])
    data = json.loads(json.dumps(s.to_dict()))
    assert Summary(**data) == s
    assert all(type(v) in (int, float) for v in data.values())


def test_summarize_is_deterministic_given_seed():
    x = np.random.default_rng(5).normal(size=64)
    assert summarize(x, seed=2) == summarize(x, seed=2)


def test_summarize_10k_samples_under_100ms():
    x = np.random.default_rng(0).lognormal(size=10_000)
    summarize(x)  # warm-up
    start = time.perf_counter()
    summarize(x)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.1, f"summarize(10k samples) took {elapsed * 1e3:.1f} ms"


def test_summarize_raises_config_error_on_empty_samples():
    with pytest.raises(ConfigError, match="empty"):
        summarize([])
