"""Peaks: DRAM bandwidth over a working set no cache can hold, cache bandwidth over one that fits,
both recorded with their sizes; the store lookup that never measures."""

from __future__ import annotations

import platform

import psutil
import pytest
import torch

from unbottle.core.env import last_level_cache
from unbottle.profiling import peaks as peaks_mod
from unbottle.profiling.peaks import METHOD, Peaks, bandwidth_working_sets, cached_peaks, stored_peaks
from unbottle.store import Store

MIB = 2**20
GIB = 2**30


@pytest.fixture(scope="module")
def measured():
    before = torch.get_num_threads()
    try:
        return peaks_mod.measure_peaks(1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("llc", "dram"),
    [
        ({"bytes": 32 * MIB, "total_bytes": 32 * MIB}, 256 * MIB),  # Zen 4: 4 × 32 MiB < the 256 MiB floor
        ({"bytes": 300 * MIB, "total_bytes": 300 * MIB}, 1200 * MIB),  # AMX Xeon: 4 × 300 MiB
        ({"bytes": 300 * MIB, "total_bytes": 600 * MIB}, 2400 * MIB),  # two sockets: all of the L3
        ({"bytes": 32 * MIB, "total_bytes": None}, 256 * MIB),  # instances unknown: one instance
    ],
)
def test_bandwidth_working_sets_read_at_least_four_times_all_last_level_cache(llc, dram):
    sizes = bandwidth_working_sets(llc, available_bytes=64 * GIB)
    assert sizes["dram"] == dram
    assert sizes["dram"] >= 4 * (llc["total_bytes"] or llc["bytes"])
    assert sizes["cache"] == llc["bytes"] // 2


def test_bandwidth_working_sets_are_capped_by_available_memory_and_skip_cache_when_unknown():
    sizes = bandwidth_working_sets({"bytes": 300 * MIB, "total_bytes": 600 * MIB}, available_bytes=4 * GIB)
    assert sizes["dram"] == GIB  # a quarter of what is free, not 2.4 GB
    assert bandwidth_working_sets(None, available_bytes=64 * GIB) == {"dram": 256 * MIB, "cache": None}


def test_measure_peaks_records_both_bandwidths_with_working_sets_sized_from_the_cache(measured):
    llc = last_level_cache()
    assert measured.method == METHOD and measured.bandwidth_gbps > 0
    assert measured.dram_working_set_bytes >= 256 * MIB
    if llc is None:
        assert measured.cache_bandwidth_gbps is None and measured.llc_bytes is None
        return
    assert measured.llc_bytes == llc["bytes"]
    all_llc = llc["total_bytes"] or llc["bytes"]
    if 4 * all_llc <= psutil.virtual_memory().total // 8:  # else the free-memory cap may apply
        assert measured.dram_working_set_bytes >= 4 * all_llc
    assert measured.cache_working_set_bytes <= llc["bytes"] // 2
    assert measured.cache_bandwidth_gbps > 0
    assert measured.cache_resident(measured.cache_working_set_bytes) is True
    assert measured.cache_resident(measured.dram_working_set_bytes) is False


def _peaks(**kw) -> Peaks:
    base = {"threads": 1, "bandwidth_gbps": 20.0, "matmul_gflops": {"float32": 100.0}}
    return Peaks(**{**base, **kw})


def test_bandwidth_for_picks_cache_only_for_working_sets_that_fit_and_a_measured_cache():
    peaks = _peaks(cache_bandwidth_gbps=80.0, llc_bytes=32 * MIB)
    assert peaks.bandwidth_for(16 * MIB) == ("cache", 80.0)
    assert peaks.bandwidth_for(64 * MIB) == ("dram", 20.0)
    unknown = _peaks()
    assert unknown.bandwidth_for(MIB) == ("dram", 20.0) and unknown.cache_resident(MIB) is None


def test_stored_peaks_finds_what_cached_peaks_measured_and_never_measures(monkeypatch):
    calls = []

    def fake_measure(threads):
        calls.append(threads)
        return _peaks(threads=threads, host=platform.node(), torch_version=torch.__version__)

    monkeypatch.setattr(peaks_mod, "measure_peaks", fake_measure)
    store = Store()
    assert stored_peaks(store, 1) is None and calls == []
    first = cached_peaks(store, 1)
    found = stored_peaks(store, 1)
    assert calls == [1] and found is not None and found.run_id == first.run_id
    assert stored_peaks(store, 2) is None
    assert cached_peaks(store, 1).run_id == first.run_id and calls == [1]
