"""A trial that crashes, hangs, raises or eats memory becomes a recorded outcome, not a dead search."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unbottle.optimizer.isolate import run_isolated


@pytest.fixture(autouse=True)
def _worker_can_import_fakes(monkeypatch):
    """The worker is a fresh interpreter: it finds ``fake_trials`` through PYTHONPATH."""
    extra = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [extra, os.environ.get("PYTHONPATH")])))


def test_ok_trial_returns_its_result():
    out = run_isolated("fake_trials:ok", {"x": 21}, timeout_s=30)
    assert out.status == "ok" and out.result == {"doubled": 42} and out.reason == ""


def test_raising_trial_is_failed_with_the_exception_line():
    out = run_isolated("fake_trials:raises", {"x": 7}, timeout_s=30)
    assert out.status == "failed" and out.reason == "ValueError: bad candidate 7"


def test_segfaulting_trial_is_crashed_with_the_signal_name():
    out = run_isolated("fake_trials:segfault", {}, timeout_s=30)
    assert out.status == "crashed" and "SIGSEGV" in out.reason and out.exit_code == -11


def test_trial_past_its_memory_limit_is_killed_and_recorded():
    out = run_isolated("fake_trials:hog", {"mib": 1500}, timeout_s=60, memory_limit_mib=300)
    assert out.status == "out-of-memory", out
    assert "300 MiB limit" in out.reason and out.peak_rss_mib > 300


def test_hanging_trial_is_killed_at_its_timeout():
    out = run_isolated("fake_trials:sleeps", {"s": 60}, timeout_s=1.5)
    assert out.status == "timeout" and "1.5 s" in out.reason
    assert out.seconds < 10


def test_the_worker_names_settings_as_its_parent_does():
    from unbottle.core.naming import SPEAKS_FLAGS

    assert run_isolated("unbottle.core.naming:opt", "seq_len", timeout_s=60).result == "seq_len"
    token = SPEAKS_FLAGS.set(True)  # as while a CLI command runs
    try:
        assert run_isolated("unbottle.core.naming:opt", "seq_len", timeout_s=60).result == "--seq-len"
    finally:
        SPEAKS_FLAGS.reset(token)
