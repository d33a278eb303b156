"""Classification on models built to be overhead-, compute- and memory-bound, against measured peaks."""

from __future__ import annotations

import pytest
import torch

from unbottle.profile import measure_peaks
from unbottle.profile.hotspots import profile_phase
from unbottle.profile.roofline import roofline


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
    row, _ = _classify(model, torch.randn(512, 1024), peaks)
    assert row["bound"] == "compute-bound", row
    assert row["intensity"] > row["ridge"]
    assert 0.2 < row["mfu"] <= 1.2  # a real fraction of the measured peak, not a made-up number


def test_matrix_vector_products_over_large_weights_are_memory_bound(peaks):
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(4)])
    row, _ = _classify(model, torch.randn(1, 4096), peaks)
    assert row["bound"] == "memory-bound", row
    assert 0.1 < row["mbu"] <= 1.2


def test_peaks_are_positive_and_ordered_sensibly(peaks):
    assert peaks.bandwidth_gbps > 1
    assert peaks.matmul_gflops["float32"] > 1
    assert peaks.ridge() == pytest.approx(peaks.matmul_gflops["float32"] / peaks.bandwidth_gbps)


@pytest.mark.gpu
def test_cuda_peaks_are_measured_with_events():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; none is visible")
    from unbottle.profile.peaks import measure_cuda_peaks

    peaks = measure_cuda_peaks()
    assert peaks.bandwidth_gbps > 50  # any CUDA GPU reads device memory faster than this
    assert peaks.matmul_gflops["float16"] > peaks.matmul_gflops["float32"]
