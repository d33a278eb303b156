"""Search trials in the store: recorded once, read back in order, and a killed search resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from unbottle.core.errors import StoreError
from unbottle.store import Store, schema_version

# A fake search: records trials t0..t9 one by one, skipping those already recorded (the resume rule).
SEARCH = """
import sys, time
from unbottle.store import Store
store = Store(sys.argv[1])
done = store.trials("s1")
for i in range(10):
    key = f"t{i}"
    if key in done:
        continue
    time.sleep(float(sys.argv[2]))
    store.record_trial("s1", key, {"speedup": i / 10})
"""


def test_trials_are_recorded_once_and_read_back_in_order(tmp_path):
    store = Store(tmp_path)
    store.record_trial("s1", "b", {"status": "ok", "speedup": 2.0})
    store.record_trial("s1", "a", {"status": "failed", "reason": "SIGSEGV"})
    store.record_trial("s2", "a", {"status": "ok"})
    assert list(store.trials("s1")) == ["b", "a"]
    assert store.trials("s1")["a"]["reason"] == "SIGSEGV"
    with pytest.raises(StoreError, match="trial 'a' of search 's1' is already recorded"):
        store.record_trial("s1", "a", {"status": "ok"})
    assert store.trials("missing") == {}
    assert schema_version() == 3


def test_search_killed_midway_resumes_without_repeating_trials(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SEARCH, str(tmp_path), "0.15"])
    store = Store(tmp_path)
    deadline = time.monotonic() + 30
    while len(store.trials("s1")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = store.trials("s1")
    assert 3 <= len(before) < 10, "the search was killed part-way"
    subprocess.run([sys.executable, "-c", SEARCH, str(tmp_path), "0"], check=True, timeout=60)
    after = store.trials("s1")
    assert list(after) == [f"t{i}" for i in range(10)], "every trial exactly once, in order"
    assert {k: after[k] for k in before} == before, "finished trials were not redone"
