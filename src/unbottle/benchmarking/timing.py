"""Timers that measure what the device did, not when Python returned.

On CPU ``perf_counter`` is exact because kernels run synchronously. On CUDA kernels are queued,
so a wall clock around a launch measures the launch; CUDA events recorded on the stream and a
synchronise give the device time.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class CpuTimer:
    """``perf_counter`` stopwatch."""

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Seconds since ``start``."""
        return time.perf_counter() - self._t0


class CudaTimer:
    """CUDA-event stopwatch; ``stop`` synchronises and returns seconds of device time."""

    def __init__(self, device: Any) -> None:
        self._torch = torch
        self.device = device
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record()

    def stop(self) -> float:
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1000.0


def make_timer(device: str) -> CpuTimer | CudaTimer:
    """The right timer for ``device`` (``cpu`` or ``cuda[:i]``)."""
    return CudaTimer(device) if device.startswith("cuda") else CpuTimer()
