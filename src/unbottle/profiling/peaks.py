"""Machine peaks, measured: the rooflines every profile is judged against.

Memory read bandwidth is a STREAM-like reduction over a float32 tensor: bytes read / best time of a
sum or a max. It is measured twice, because which one a phase meets depends on whether its bytes fit
in the last-level cache: **DRAM** over a working set of at least 4× all of the CPU's last-level cache
(at least 256 MiB, at most a quarter of the available memory), so no host's cache can hold it (a 256
MiB buffer is cache-resident on a 300 MiB L3), and **cache** over half of one last-level cache
instance (only when the OS reports its size). Matmul throughput is the best of several square products per
dtype (fp32, bf16, int8 through ``torch._int_mm`` where the CPU build has it; fp16 on GPU). Both are
measured per thread count, since a 1-thread roofline judges a 1-thread run. Results are cached in the
store as a ``peaks`` run per host, torch version and thread count; ``refresh`` re-measures.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable
from typing import Any

import psutil
import torch

from unbottle.core.env import last_level_cache, manifest

BANDWIDTH_BYTES = 256 * 2**20  # the least DRAM working set, whatever the cache
DRAM_LLC_MULTIPLE = 4  # the DRAM working set is at least this many times all last-level cache
MEMORY_SHARE = 0.25  # ... and at most this share of the available memory
MATMUL_N = 1024
REPEATS = 7
TIME_BUDGET_S = 2.5  # per reduction over the DRAM working set: fewer repeats of a large buffer
METHOD = 3  # bump when the measurement changes, so cached peaks measured the old way are not reused


@dataclasses.dataclass
class Peaks:
    """Measured peaks at one thread count (GB/s and GFLOP/s; int8 in GOP/s).

    ``bandwidth_gbps`` is DRAM read bandwidth over ``dram_working_set_bytes``; ``cache_bandwidth_gbps``
    is read bandwidth over ``cache_working_set_bytes`` (half of one ``llc_bytes`` instance), None when
    the last-level cache size is unknown.
    """

    threads: int
    bandwidth_gbps: float
    matmul_gflops: dict[str, float]
    device: str = "cpu"
    host: str = ""
    torch_version: str = ""
    measured_at: str = ""
    run_id: int | None = None
    method: int = METHOD
    dram_working_set_bytes: int = BANDWIDTH_BYTES
    cache_bandwidth_gbps: float | None = None
    cache_working_set_bytes: int | None = None
    llc_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def ridge(self, dtype: str = "float32", bandwidth_gbps: float | None = None) -> float:
        """FLOPs per byte where the roofline turns from memory- to compute-bound (DRAM by default)."""
        peak = self.matmul_gflops.get(dtype, next(iter(self.matmul_gflops.values())))
        return peak / (bandwidth_gbps or self.bandwidth_gbps)

    def bandwidth_for(self, nbytes: float) -> tuple[str, float]:
        """Which bandwidth a working set of ``nbytes`` read per step meets: ``("cache", GB/s)`` when it
        fits in one last-level cache instance and the cache bandwidth was measured, else
        ``("dram", GB/s)``."""
        if self.cache_resident(nbytes) and self.cache_bandwidth_gbps:
            return "cache", self.cache_bandwidth_gbps
        return "dram", self.bandwidth_gbps

    def cache_resident(self, nbytes: float) -> bool | None:
        """Whether ``nbytes`` fit in one last-level cache instance; None when its size is unknown."""
        return None if not self.llc_bytes else nbytes <= self.llc_bytes


def bandwidth_working_sets(llc: dict[str, Any] | None, available_bytes: int) -> dict[str, int | None]:
    """Bytes to read for the DRAM and the cache bandwidth.

    Args:
        llc: ``unbottle.core.env.last_level_cache()`` (None: unknown).
        available_bytes: memory free for the buffer (``psutil.virtual_memory().available``).

    Returns:
        ``{"dram": ≥ 4× all last-level cache and ≥ 256 MiB, capped at a quarter of available_bytes;
        "cache": half of one last-level cache instance, or None when its size is unknown}``, both
        whole float32 elements.
    """
    llc_all = (llc or {}).get("total_bytes") or (llc or {}).get("bytes") or 0
    dram = max(BANDWIDTH_BYTES, DRAM_LLC_MULTIPLE * llc_all)
    dram = min(dram, max(int(MEMORY_SHARE * available_bytes), 2**20))
    cache = (llc or {}).get("bytes")
    return {"dram": dram // 4 * 4, "cache": cache // 2 // 4 * 4 if cache else None}


def _best(fn: Callable[[], Any], repeats: int = REPEATS, budget_s: float | None = None) -> float:
    """Best time of ``repeats`` calls after a warm-up; with ``budget_s``, as many as fit in it (≥ 2)."""
    start = time.perf_counter()
    fn()
    if budget_s is not None:
        repeats = max(2, min(repeats, int(budget_s / max(time.perf_counter() - start, 1e-9))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


_MV_WIDTH = 4096  # columns of the matrix view read by the matrix-vector product


def measure_bandwidth(nbytes: int = BANDWIDTH_BYTES, budget_s: float | None = None) -> float:
    """GB/s of reading a float32 tensor of ``nbytes`` with torch at the current thread count.

    Args:
        nbytes: the working set.
        budget_s: seconds each of the three reads may take in all (None: ``REPEATS`` repeats).
    """
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    # three ways to read it once, the fastest counts: at 1 thread torch's sum is partly compute-limited,
    # and the BLAS matrix-vector product (what batch-1 decoding does) prefetches best on some hosts
    # (an Intel Xeon host: 14.2 GB/s vs 12.0 for the sum, and decode MBU read 1.3 against the sum)
    rows = x.view(-1, _MV_WIDTH) if x.numel() % _MV_WIDTH == 0 else x.view(1, -1)
    v = torch.ones(rows.shape[1], dtype=torch.float32)
    reads = (lambda: x.sum(), lambda: x.amax(), lambda: torch.mv(rows, v))
    best = min(_best(read, budget_s=budget_s) for read in reads)
    return x.numel() * 4 / best / 1e9


def measure_bandwidths() -> dict[str, Any]:
    """DRAM and cache-resident read bandwidth at the current thread count, with their working sets.

    Returns:
        ``Peaks`` fields: ``bandwidth_gbps``, ``dram_working_set_bytes``, ``cache_bandwidth_gbps``,
        ``cache_working_set_bytes`` (both None without a known last-level cache) and ``llc_bytes``.
    """
    llc = last_level_cache()
    sizes = bandwidth_working_sets(llc, psutil.virtual_memory().available)
    cache = measure_bandwidth(sizes["cache"], budget_s=0.5) if sizes["cache"] else None
    return {
        "bandwidth_gbps": measure_bandwidth(sizes["dram"], budget_s=TIME_BUDGET_S),
        "dram_working_set_bytes": sizes["dram"],
        "cache_bandwidth_gbps": cache,
        "cache_working_set_bytes": sizes["cache"],
        "llc_bytes": (llc or {}).get("bytes"),
    }


def measure_matmul(dtype: str, n: int = MATMUL_N) -> float | None:
    """GFLOP/s (GOP/s for int8) of an n×n×n product; None when this build can't run that dtype."""
    gen = torch.Generator().manual_seed(0)
    try:
        if dtype == "int8":
            a = torch.randint(-64, 64, (n, n), dtype=torch.int8, generator=gen)
            b = torch.randint(-64, 64, (n, n), dtype=torch.int8, generator=gen)
            fn = lambda: torch._int_mm(a, b)  # noqa: E731
        else:
            a = torch.randn(n, n, generator=gen).to(getattr(torch, dtype))
            b = torch.randn(n, n, generator=gen).to(getattr(torch, dtype))
            fn = lambda: a @ b  # noqa: E731
        return 2 * n**3 / _best(fn) / 1e9
    except (RuntimeError, AttributeError, NotImplementedError):
        return None


def measure_cuda_peaks(device: str = "cuda") -> Peaks:
    """GPU peaks: device-memory read bandwidth (1 GiB sum) and fp32/tf32-off, bf16, fp16 matmuls,
    timed with CUDA events after a synchronize."""

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        torch.cuda.synchronize(device)
        best = float("inf")
        for _ in range(REPEATS):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return best

    x = torch.ones(2**28, dtype=torch.float32, device=device)
    bandwidth = x.numel() * 4 / timed(x.sum) / 1e9  # 1 GiB: far above any GPU's L2
    x = None  # free the GiB before the matmuls
    n = 4096
    flops = {}
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for dtype in ("float32", "bfloat16", "float16"):
            a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
            flops[dtype] = 2 * n**3 / timed(lambda a=a: a @ a) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return Peaks(
        threads=0,
        bandwidth_gbps=bandwidth,
        matmul_gflops=flops,
        device=torch.cuda.get_device_name(device),
        host=platform.node(),
        torch_version=torch.__version__,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        dram_working_set_bytes=2**30,
    )


def measure_peaks(threads: int) -> Peaks:
    """Measure every peak at ``threads`` torch threads (restores the previous setting).

    Takes a few seconds: the DRAM working set is read for at most ``TIME_BUDGET_S`` per reduction.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        bandwidths = measure_bandwidths()
        flops = {d: v for d in ("float32", "bfloat16", "int8") if (v := measure_matmul(d)) is not None}
    finally:
        torch.set_num_threads(previous)
    return Peaks(
        threads=threads,
        **bandwidths,
        matmul_gflops=flops,
        host=platform.node(),
        torch_version=torch.__version__,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def stored_peaks(store: Any, threads: int, device: str = "cpu") -> Peaks | None:
    """The latest stored peaks for this host, torch, method and thread count (or GPU); None if none.

    Cheap (a store query): for callers that must not wait for a measurement.
    """
    for run in store.list_runs(limit=200, kind="peaks"):
        r = run.result or {}
        if (
            run.effective_status == "complete"
            and r.get("threads") == threads
            and r.get("host") == platform.node()
            and r.get("torch_version") == torch.__version__
            and r.get("method") == METHOD
            and (r.get("device") == "cpu") == (device == "cpu")
        ):
            return Peaks(**{**r, "run_id": run.id})
    return None


def cached_peaks(store: Any, threads: int, refresh: bool = False, device: str = "cpu") -> Peaks:
    """The latest stored peaks for this host, torch and thread count (or GPU); measured if none."""
    if not refresh and (found := stored_peaks(store, threads, device)) is not None:
        return found
    peaks = measure_peaks(threads) if device == "cpu" else measure_cuda_peaks(device)
    if device != "cpu":
        peaks.threads = threads  # the cache key: the CPU threads in force when it was measured
    run_id = store.start_run("peaks", "-", {"threads": threads, "device": device}, manifest())
    store.finish_run(run_id, "complete", result=peaks.to_dict())
    peaks.run_id = run_id
    return peaks
