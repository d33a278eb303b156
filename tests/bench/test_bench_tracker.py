"""Resource tracking: peak RSS belongs to the measured phase, utilisation is sampled, timers tick."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from unbottle.benchmarking.timing import CpuTimer, CudaTimer, make_timer
from unbottle.benchmarking.tracker import ResourceTracker

MIB = 1024 * 1024


def _touch(mib: int) -> np.ndarray:
    return np.ones(mib * MIB // 8)  # written, so resident


def test_peak_rss_is_reset_at_phase_start_and_sees_phase_allocations():
    big = _touch(400)  # a peak before the phase must not count
    del big
    with ResourceTracker() as quiet:
        time.sleep(0.06)
    with ResourceTracker() as busy:
        arr = _touch(300)
        del arr
    if quiet.peak_rss_method != "hwm":
        pytest.skip("this kernel does not allow resetting the RSS high-water mark")
    grown = (busy.peak_rss_bytes - quiet.peak_rss_bytes) / MIB
    assert grown > 250, f"a 300 MiB allocation inside the phase should raise its peak (got +{grown:.0f} MiB)"
    baseline = quiet.measurements("x", {})[0]
    assert baseline.name == "memory.peak_rss" and baseline.unit == "MiB"
    assert baseline.samples[0] < busy.peak_rss_bytes / MIB - 250, "the earlier 400 MiB peak leaked in"


def test_tracker_samples_cpu_utilisation_of_a_busy_phase():
    with ResourceTracker(interval_s=0.02) as tracker:
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass
    util = next(m for m in tracker.measurements("x", {}) if m.name == "cpu.utilisation")
    assert util.unit == "%cpu" and len(util.samples) >= 5
    assert np.median(util.samples) > 50, f"a spinning thread should show as busy: {util.samples}"


def test_cpu_timer_measures_elapsed_seconds():
    timer = make_timer("cpu")
    assert isinstance(timer, CpuTimer)
    timer.start()
    time.sleep(0.05)
    assert 0.045 < timer.stop() < 0.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_timer_measures_device_time_of_queued_kernels():
    timer = make_timer("cuda")
    assert isinstance(timer, CudaTimer)
    a = torch.randn(4096, 4096, device="cuda")
    timer.start()
    for _ in range(10):
        a = a @ a
        a = a / a.norm()
    elapsed = timer.stop()
    assert elapsed > 0
    with ResourceTracker("cuda") as tracker:
        b = torch.empty(256 * MIB // 4, device="cuda")
        del b
    names = {m.name for m in tracker.measurements("x", {})}
    assert "memory.cuda_max_allocated" in names
    assert tracker.cuda_max_allocated_bytes >= 256 * MIB
