"""Classification on models built to be overhead-, compute- and memory-bound, against measured peaks.

Sizes that decide cache residency come from the host's last-level cache, never a fixed number: 268 MB
of weights stream from DRAM on a 32 MiB L3 and sit in cache on a 300 MiB one.
"""

from __future__ import annotations

import math

import psutil
import pytest
import torch

from unbottle.core.env import last_level_cache
from unbottle.profiling import measure_peaks
from unbottle.profiling.hotspots import profile_phase
from unbottle.profiling.roofline import roofline

# Each test sets a timing against peaks measured at another moment: beside other tests (pytest-xdist)
# the peak can be measured slow and a model fast, so they run alone (`make test` runs them last).
pytestmark = pytest.mark.alone


@pytest.fixture(scope="module")
def peaks():
    torch.set_num_threads(1)
    return measure_peaks(1)


def _classify(model, x, peaks):
    torch.set_num_threads(1)
    weights = sum(p.numel() * 4 for p in model.parameters())
    macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    rows = x.shape[0]
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    work = {"flops": 2.0 * macs * rows, "bytes": float(weights + 4 * rows * (x.shape[1] + sum(widths)))}

    def step():
        with torch.inference_mode():
            model(x)

    prof = profile_phase("prefill", step, model, repeats=3)
    return roofline(prof, work, peaks, "float32", rows), prof


def test_many_tiny_ops_are_overhead_bound(peaks):
    layers = []
    for _ in range(200):
        layers += [torch.nn.Linear(4, 4), torch.nn.ReLU()]
    row, prof = _classify(torch.nn.Sequential(*layers), torch.randn(1, 4), peaks)
    assert row["bound"] == "overhead-bound", row
    assert row["overhead_fraction"] > 0.5


def test_large_matmuls_are_compute_bound(peaks):
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(4)])
    x = torch.randn(512, 1024)
    row, _ = _classify(model, x, peaks)
    if row["mfu"] > 1.2:  # the module's peak was measured while something else still ran (too low)
        torch.set_num_threads(1)
        row, _ = _classify(model, x, measure_peaks(1))
    assert row["bound"] == "compute-bound", row
    assert row["intensity"] > row["ridge"]
    assert 0.2 < row["mfu"] <= 1.2  # a real fraction of the measured peak, not a made-up number


MAX_WEIGHT_BYTES = 3 * 2**30  # the memory-bound test's weights stay under this, or it skips


def test_matrix_vector_products_over_large_weights_are_memory_bound(peaks):
    # Weights at least as large as the working set DRAM bandwidth was measured on (≥ 4× all last-level
    # cache), so both stream from DRAM whatever the cache: MBU compares like with like.
    if last_level_cache() is None:
        pytest.skip("the OS does not report the last-level cache size: cannot size weights to exceed it")
    layer_bytes = 4096 * 4097 * 4
    layers = max(4, math.ceil(peaks.dram_working_set_bytes / layer_bytes))
    needed = layers * layer_bytes
    if needed > min(MAX_WEIGHT_BYTES, psutil.virtual_memory().available // 4):
        pytest.skip(f"{needed / 2**30:.1f} GiB of weights would be needed to exceed this host's cache")
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(layers)])
    row, _ = _classify(model, torch.randn(1, 4096), peaks)
    assert row["bound"] == "memory-bound", row
    assert row["bandwidth"] == "dram" and row["cache_resident"] is False, row
    assert 0.1 < row["mbu"] <= 1.2


def test_matrix_vector_products_over_cache_resident_weights_are_judged_against_cache(peaks):
    if peaks.llc_bytes is None:
        pytest.skip("the OS does not report the last-level cache size")
    width = 1024
    layers = max(1, peaks.llc_bytes // 4 // (width * (width + 1) * 4))  # a quarter of the cache
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    row, _ = _classify(model, torch.randn(1, width), peaks)
    assert row["cache_resident"] is True and row["bandwidth"] == "cache", row
    assert row["bandwidth_gbps"] == peaks.cache_bandwidth_gbps
    assert row["mbu"] == pytest.approx(row["achieved_gbps"] / peaks.cache_bandwidth_gbps)


def test_peaks_are_positive_and_ordered_sensibly(peaks):
    assert peaks.bandwidth_gbps > 0 and peaks.matmul_gflops["float32"] > 0
    assert peaks.ridge() == pytest.approx(peaks.matmul_gflops["float32"] / peaks.bandwidth_gbps)
    if peaks.cache_bandwidth_gbps is not None:
        ridge = peaks.ridge("float32", peaks.cache_bandwidth_gbps)
        assert ridge == pytest.approx(peaks.matmul_gflops["float32"] / peaks.cache_bandwidth_gbps)


@pytest.mark.gpu
def test_cuda_peaks_are_measured_with_events():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; none is visible")
    from unbottle.profiling.peaks import measure_cuda_peaks

    peaks = measure_cuda_peaks()
    assert peaks.bandwidth_gbps > 50  # any CUDA GPU reads device memory faster than this
    assert peaks.matmul_gflops["float16"] > peaks.matmul_gflops["float32"]
