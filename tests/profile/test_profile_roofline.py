"""The roofline judges each phase against the bandwidth its working set meets (cache or DRAM), and says
which; decode ceilings and expected format gains do the same. Peaks here are made up, not measured,
so every check holds on any host."""

from __future__ import annotations

import pytest

from unbottle.profiling.diagnose import diagnose
from unbottle.profiling.hotspots import PhaseProfile
from unbottle.profiling.peaks import Peaks
from unbottle.profiling.roofline import (
    BYTES_PER_PARAM,
    decode_ceiling_bandwidths,
    decode_ceilings,
    format_decode_gain,
    phase_work,
    roofline,
)

MIB = 2**20
PEAKS = Peaks(
    threads=1,
    bandwidth_gbps=20.0,
    matmul_gflops={"float32": 100.0, "bfloat16": 200.0, "int8": 400.0},
    cache_bandwidth_gbps=80.0,
    llc_bytes=32 * MIB,
)


def _profile(wall_s: float = 0.01, kernel_s: float = 0.0099) -> PhaseProfile:
    return PhaseProfile("decode", wall_s, wall_s, kernel_s, {}, [], 0.0)


@pytest.mark.parametrize(
    ("step_mib", "which", "gbps", "resident"), [(16, "cache", 80.0, True), (64, "dram", 20.0, False)]
)
def test_roofline_judges_a_phase_against_the_bandwidth_its_working_set_meets(step_mib, which, gbps, resident):
    work = {"flops": 0.5 * step_mib * MIB * 4, "bytes": step_mib * MIB * 4.0, "step_bytes": step_mib * MIB}
    row = roofline(_profile(), work, PEAKS, "float32", tokens=4)
    assert (row["bandwidth"], row["bandwidth_gbps"], row["cache_resident"]) == (which, gbps, resident)
    assert row["mbu"] == pytest.approx(row["achieved_gbps"] / gbps)
    assert row["ridge"] == pytest.approx(100.0 / gbps)
    assert row["bound"] == "memory-bound"
    assert row["ideal_s"] == pytest.approx(work["bytes"] / (gbps * 1e9))


def test_roofline_uses_dram_and_says_residency_is_unknown_without_a_cache_size():
    peaks = Peaks(threads=1, bandwidth_gbps=20.0, matmul_gflops={"float32": 100.0})
    row = roofline(_profile(), {"flops": 1e6, "bytes": 1e6}, peaks, "float32", tokens=1)
    assert (row["bandwidth"], row["cache_resident"], row["step_bytes"]) == ("dram", None, 1e6)


def test_decode_ceilings_read_each_format_at_the_bandwidth_its_bytes_meet():
    params = 20_000_000  # fp32 80 MB and int8 22.5 MB: only the smaller formats fit in 32 MiB
    basis = decode_ceiling_bandwidths(params, 0.0, PEAKS)
    assert {f: b["bandwidth"] for f, b in basis.items()} == {
        "float32": "dram",
        "bfloat16": "dram",
        "int8": "cache",
        "int4": "cache",
    }
    ceilings = decode_ceilings(params, 0.0, PEAKS)
    assert ceilings["float32"] == pytest.approx(20e9 / (params * 4))
    assert ceilings["int8"] == pytest.approx(80e9 / (params * BYTES_PER_PARAM["int8"]))


def test_phase_work_step_bytes_are_what_one_forward_reads(tiny_llama):
    weights = 1_000_000
    decode = phase_work(tiny_llama.model, "decode", tokens=8, context=32, weight_bytes=weights)
    prefill = phase_work(tiny_llama.model, "prefill", tokens=32, context=0, weight_bytes=weights)
    assert decode["step_bytes"] == pytest.approx(weights + (decode["bytes"] - 8 * weights) / 8)
    assert prefill["step_bytes"] == prefill["bytes"] > weights


def test_diagnosis_says_a_memory_bound_phase_was_judged_against_cache_bandwidth():
    work = {"flops": 0.5 * 64 * MIB, "bytes": 64.0 * MIB, "step_bytes": 16 * MIB}
    row = roofline(_profile(), work, PEAKS, "float32", tokens=4)
    params = 20_000_000
    ceilings = decode_ceilings(params, 0.0, PEAKS)
    basis = decode_ceiling_bandwidths(params, 0.0, PEAKS)
    doc = diagnose({"decode": row}, {}, PEAKS, ceilings, {"prompt_tokens": 8, "new_tokens": 4}, basis)
    text = doc["findings"][0]["text"]
    assert "of measured cache bandwidth used (MBU)" in text
    assert "16 MiB read per step fit in the last-level cache" in text
    assert "(int8, int4 at cache bandwidth" in text


def test_format_decode_gain_is_the_bytes_ratio_when_memory_bound():
    for fmt in ("bfloat16", "int8", "int4"):
        expected = BYTES_PER_PARAM["float32"] / BYTES_PER_PARAM[fmt]
        assert format_decode_gain(PEAKS, fmt, "float32") == pytest.approx(expected)


def test_format_decode_gain_is_capped_by_the_compute_peak():
    slow = Peaks(threads=1, bandwidth_gbps=20.0, matmul_gflops={"float32": 25.0})  # 2 FLOP/weight: 0.08 ns
    gain = format_decode_gain(slow, "int4", "float32")
    assert gain == pytest.approx((4 / 20.0) / (2 / 25.0))  # 2.5x, not the 6.4x bytes ratio
    assert gain < BYTES_PER_PARAM["float32"] / BYTES_PER_PARAM["int4"]


def test_format_decode_gain_counts_a_format_that_fits_in_cache_at_cache_bandwidth():
    weights = 80e6  # fp32 from DRAM, int8 (22.5 MB) from the 32 MiB cache
    gain = format_decode_gain(PEAKS, "int8", "int8", weight_bytes=weights)
    assert gain == pytest.approx((4 / 20.0) / (BYTES_PER_PARAM["int8"] / 80.0))
    assert gain > format_decode_gain(PEAKS, "int8", "int8")  # the bytes ratio alone


def test_kernel_time_leaves_out_a_stall_far_slower_than_its_op_median():
    from types import SimpleNamespace

    from unbottle.profiling.hotspots import _kernel_us

    calls = [SimpleNamespace(name="aten::addmm", input_shapes=[[1, 4]], self_cpu_time_total=2.0)] * 99
    stalled = SimpleNamespace(name="aten::addmm", input_shapes=[[1, 4]], self_cpu_time_total=4000.0)
    rare = SimpleNamespace(name="aten::mm", input_shapes=[[512, 512]], self_cpu_time_total=900.0)
    kernel, stall = _kernel_us([*calls, stalled, rare], floor_us=1.0)
    # 100 addmm calls at 1 µs of work each (the stalled one capped at 20× the median), the lone mm whole
    assert kernel == pytest.approx(99 * 1.0 + (20 * 2.0) + 899.0)
    assert stall == pytest.approx(4000.0 - (20 * 2.0 + 1.0))
