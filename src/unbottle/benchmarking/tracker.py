"""Resource tracking around a measured phase: peak memory and utilisation.

Peak RSS of a *phase* needs the kernel's high-water mark reset at the phase start; Linux allows
that through ``/proc/self/clear_refs`` (value 5). Where that is unavailable we fall back to the
maximum of RSS samples taken by a background thread, and say which method was used. The same
thread samples process CPU utilisation and, on CUDA with NVML, GPU utilisation.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import psutil
import torch

from unbottle.core.measurement import Measurement

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


class ResourceTracker:
    """Context manager that measures peak memory and samples utilisation during a phase.

    Args:
        device: ``cpu`` or ``cuda[:i]``.
        interval_s: sampling period of the background thread.
    """

    def __init__(self, device: str = "cpu", interval_s: float = 0.05) -> None:
        self.device = device
        self.interval_s = interval_s
        self.cpu_percent: list[float] = []
        self.gpu_percent: list[float] = []
        self.rss_samples: list[int] = []
        self.peak_rss_method = "hwm"
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._nvml: Any = None

    def __enter__(self) -> ResourceTracker:
        self.peak_rss_method = "hwm" if _reset_peak_rss() else "sampled"
        if self.device.startswith("cuda"):
            self._start_cuda()
        self._proc.cpu_percent(None)  # prime: the next call reports usage since now
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.rss_samples.append(self._proc.memory_info().rss)
        hwm = _peak_rss_bytes() if self.peak_rss_method == "hwm" else None
        self.peak_rss_bytes = max(hwm or 0, max(self.rss_samples))
        if self.device.startswith("cuda"):
            self.cuda_max_allocated_bytes = torch.cuda.max_memory_allocated(self.device)

    def _start_cuda(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            import pynvml

            pynvml.nvmlInit()
            index = torch.device(self.device).index or 0
            self._nvml = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # NVML is optional: no nvidia-ml-py, or no driver access
            self._nvml = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.cpu_percent.append(self._proc.cpu_percent(None))
            self.rss_samples.append(self._proc.memory_info().rss)
            if self._nvml is not None:
                import pynvml

                self.gpu_percent.append(float(pynvml.nvmlDeviceGetUtilizationRates(self._nvml).gpu))

    def measurements(self, scenario: str, params: dict[str, Any]) -> list[Measurement]:
        """The phase's resource metrics as measurements (one peak sample, many utilisation samples)."""
        mib = 1024 * 1024
        out = [
            Measurement("memory.peak_rss", "MiB", [self.peak_rss_bytes / mib], False, scenario, dict(params)),
        ]
        if self.cpu_percent:
            out.append(Measurement("cpu.utilisation", "%cpu", self.cpu_percent, True, scenario, dict(params)))
        if hasattr(self, "cuda_max_allocated_bytes"):
            out.append(
                Measurement(
                    "memory.cuda_max_allocated",
                    "MiB",
                    [self.cuda_max_allocated_bytes / mib],
                    False,
                    scenario,
                    dict(params),
                )
            )
        if self.gpu_percent:
            out.append(Measurement("gpu.utilisation", "%", self.gpu_percent, True, scenario, dict(params)))
        return out
