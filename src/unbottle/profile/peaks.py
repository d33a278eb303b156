"""Machine peaks, measured: the rooflines every profile is judged against.

Memory read bandwidth is a STREAM-like reduction over a 256 MiB float32 tensor (far larger than any
cache): bytes read / best time of a sum or a max. Matmul throughput is the best of several square products per
dtype (fp32, bf16, int8 through ``torch._int_mm`` where the CPU build has it; fp16 on GPU). Both are
measured per thread count, since a 1-thread roofline judges a 1-thread run. Results are cached in the
store as a ``peaks`` run per host, torch version and thread count; ``refresh`` re-measures.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

BANDWIDTH_BYTES = 256 * 2**20
MATMUL_N = 1024
REPEATS = 7
METHOD = 2  # bump when the measurement changes, so cached peaks measured the old way are not reused


@dataclasses.dataclass
class Peaks:
    """Measured peaks at one thread count (GB/s and GFLOP/s; int8 in GOP/s)."""

    threads: int
    bandwidth_gbps: float
    matmul_gflops: dict[str, float]
    device: str = "cpu"
    host: str = ""
    torch_version: str = ""
    measured_at: str = ""
    run_id: int | None = None
    method: int = METHOD

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def ridge(self, dtype: str = "float32") -> float:
        """FLOPs per byte where the roofline turns from memory- to compute-bound."""
        return self.matmul_gflops.get(dtype, next(iter(self.matmul_gflops.values()))) / self.bandwidth_gbps


def _best(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_bandwidth(nbytes: int = BANDWIDTH_BYTES) -> float:
    """GB/s of reading a float32 tensor of ``nbytes`` with torch at the current thread count."""
    import torch

    x = torch.ones(nbytes // 4, dtype=torch.float32)
    # two reductions, the faster counts: at 1 thread torch's sum is partly compute-limited
    return x.numel() * 4 / min(_best(lambda: x.sum()), _best(lambda: x.amax())) / 1e9


def measure_matmul(dtype: str, n: int = MATMUL_N) -> float | None:
    """GFLOP/s (GOP/s for int8) of an n×n×n product; None when this build can't run that dtype."""
    import torch

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
    import platform

    import torch

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
    bandwidth = x.numel() * 4 / timed(x.sum) / 1e9
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
    )


def measure_peaks(threads: int) -> Peaks:
    """Measure every peak at ``threads`` torch threads (restores the previous setting)."""
    import platform

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        bandwidth = measure_bandwidth()
        flops = {d: v for d in ("float32", "bfloat16", "int8") if (v := measure_matmul(d)) is not None}
    finally:
        torch.set_num_threads(previous)
    return Peaks(
        threads=threads,
        bandwidth_gbps=bandwidth,
        matmul_gflops=flops,
        host=platform.node(),
        torch_version=torch.__version__,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def cached_peaks(store: Any, threads: int, refresh: bool = False, device: str = "cpu") -> Peaks:
    """The latest stored peaks for this host, torch and thread count (or GPU); measured if none."""
    import platform

    import torch

    from unbottle.core.env import manifest

    if not refresh:
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
    peaks = measure_peaks(threads) if device == "cpu" else measure_cuda_peaks(device)
    if device != "cpu":
        peaks.threads = threads  # the cache key: the CPU threads in force when it was measured
    run_id = store.start_run("peaks", "-", {"threads": threads, "device": device}, manifest())
    store.finish_run(run_id, "complete", result=peaks.to_dict())
    peaks.run_id = run_id
    return peaks
