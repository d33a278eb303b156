"""The environment manifest stored with every run: which machine, libraries and settings made the numbers.

A speed-up measured on an AMX-capable Xeon with 32 threads says little about a laptop with 4; without
the CPU flags, thread settings, library versions and source commit, two runs cannot be compared
honestly. Everything here is cheap (well under a second once torch is imported), never raises for a
missing tool or library, and returns plain JSON-ready values.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import torch

import unbottle

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "fma")
LIBRARIES = (
    "torch",
    "transformers",
    "safetensors",
    "gguf",
    "accelerate",
    "tokenizers",
    "numpy",
    "psutil",
    "typer",
    "rich",
    "onnxruntime",
    "onnxruntime-genai",
    "onnx",
    "torchao",
)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_CPUINFO = Path("/proc/cpuinfo")
_SYSFS_CPU = Path("/sys/devices/system/cpu")
_LSCPU_TIMEOUT_S = 2.0
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
_NVIDIA_DRIVER_VERSION = Path("/proc/driver/nvidia/version")
_GIT_TIMEOUT_S = 2.0


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Parse the first processor block of a Linux ``/proc/cpuinfo`` text.

    Args:
        text: contents of ``/proc/cpuinfo``.

    Returns:
        ``{"model": str | None, "vendor": str | None, "flags": {flag: bool}}`` with one boolean for
        each of ``CPU_FLAGS``. ARM's ``Features`` line is read as the flag list.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # end of the first processor block
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    present = set((fields.get("flags") or fields.get("features") or "").split())
    return {
        "model": fields.get("model name") or fields.get("cpu model") or None,
        "vendor": fields.get("vendor_id") or fields.get("cpu implementer") or None,
        "flags": {flag: flag in present for flag in CPU_FLAGS},
    }


def cpu_info() -> dict[str, Any]:
    """Describe the CPU: model, vendor, SIMD/AMX flags, last-level cache and torch's dispatch capability.

    Returns:
        ``parse_cpuinfo`` fields plus ``"torch_capability"`` (e.g. ``"AVX512"``, or None without
        torch) and ``"llc"`` (``last_level_cache()``: None when unknown). Off Linux, ``model`` comes
        from ``platform.processor()`` and ``flags`` is empty (unknown, not absent).
    """
    try:
        info = parse_cpuinfo(_CPUINFO.read_text(errors="replace"))
    except OSError:
        info = {"model": platform.processor() or None, "vendor": None, "flags": {}}
    info["torch_capability"] = _torch_cpu_capability()
    info["llc"] = last_level_cache()
    return info


def last_level_cache() -> dict[str, Any] | None:
    """The CPU's last-level cache (the highest-level data or unified cache), as the OS reports it.

    Whether a working set is served from cache or from DRAM decides which bandwidth a roofline must
    use: a 268 MB model is DRAM-bound on a 32 MiB L3 and cache-resident on a 300 MiB one.

    Returns:
        ``{"level", "bytes" (one instance, as one core sees it), "instances" (None when the OS does
        not say), "total_bytes" (all instances; None with ``instances``), "source"}`` read from sysfs,
        else from ``lscpu -B -C --json``; None when neither tells (never a guess).
    """
    return _llc_from_sysfs(_SYSFS_CPU) or _llc_from_lscpu()


def parse_cache_size(text: str) -> int | None:
    """Bytes of a sysfs or lscpu cache size (``"32768K"``, ``"1M"``, ``"33554432"``); None if unreadable."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()] if match else None


def _llc_from_sysfs(root: Path) -> dict[str, Any] | None:
    caches = []  # (level, index folder name, bytes) of cpu0's data and unified caches
    for index in sorted((root / "cpu0" / "cache").glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = parse_cache_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size:
            caches.append((level, index.name, size))
    if not caches:
        return None
    level, name, size = max(caches)
    # One instance per distinct set of CPUs sharing it (two sockets, or one L3 per AMD CCD).
    shared = set()
    for cpu_cache in root.glob(f"cpu[0-9]*/cache/{name}"):
        try:
            shared.add((cpu_cache / "shared_cpu_list").read_text().strip())
        except OSError:
            shared = set()
            break
    instances = len(shared) or None
    total = size * instances if instances else None
    return {"level": level, "bytes": size, "instances": instances, "total_bytes": total, "source": "sysfs"}


def _llc_from_lscpu() -> dict[str, Any] | None:
    try:
        result = subprocess.run(
            ["lscpu", "-B", "-C", "--json"],
            capture_output=True,
            text=True,
            timeout=_LSCPU_TIMEOUT_S,
            check=False,
        )
        caches = json.loads(result.stdout)["caches"] if result.returncode == 0 else []
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None
    return parse_lscpu_caches(caches)


def parse_lscpu_caches(caches: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last-level cache from ``lscpu -B -C --json``'s ``caches`` list (see ``last_level_cache``)."""
    found = []
    for cache in caches:
        one = parse_cache_size(str(cache.get("one-size", "")))
        every = parse_cache_size(str(cache.get("all-size", "")))
        if cache.get("type") in ("Data", "Unified") and one and isinstance(cache.get("level"), int):
            found.append((cache["level"], one, every))
    if not found:
        return None
    level, size, every = max(found)
    instances = every // size if every and every % size == 0 else None
    total = size * instances if instances else None
    return {"level": level, "bytes": size, "instances": instances, "total_bytes": total, "source": "lscpu"}


def _torch_cpu_capability() -> str | None:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an older torch without it: the manifest must still be written
        return None


def physical_cores() -> int:
    """Number of physical CPU cores (logical CPUs where psutil cannot tell)."""
    return psutil.cpu_count(logical=False) or logical_cpus()


def logical_cpus() -> int:
    """Number of logical CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_settings() -> dict[str, Any]:
    """Torch's intra-/inter-op thread counts and the threading environment variables.

    Returns:
        ``{"torch_num_threads", "torch_num_interop_threads"}`` and each of
        ``THREAD_ENV_VARS`` as its string value or None when unset.
    """
    threads: dict[str, Any] = {
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
    }
    return {**threads, **{name: os.environ.get(name) for name in THREAD_ENV_VARS}}


def gpu_info() -> list[dict[str, Any]]:
    """Describe each visible CUDA device; an empty list without torch or CUDA.

    Returns:
        One dict per device: ``index``, ``name``, ``total_memory_mib``, ``capability`` (e.g. ``"9.0"``),
        ``multiprocessors``, ``cuda_version`` (torch's CUDA runtime) and ``driver_version`` (or None).
    """
    try:
        if not torch.cuda.is_available():
            return []
        count = torch.cuda.device_count()
    except Exception:  # a broken CUDA install: report no GPU rather than fail the run
        return []
    driver = _nvidia_driver_version()
    devices = []
    for index in range(count):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "index": index,
                "name": props.name,
                "total_memory_mib": props.total_memory // 2**20,
                "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
                "cuda_version": torch.version.cuda,
                "driver_version": driver,
            }
        )
    return devices


def _nvidia_driver_version() -> str | None:
    try:
        import pynvml  # from the optional nvidia-ml-py dependency

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no pynvml or no NVML library: fall back to the kernel module's banner
        return _driver_version_from_proc()


def _driver_version_from_proc() -> str | None:
    # e.g. "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024"
    try:
        match = re.search(r"Kernel Module\s+([\d.]+)", _NVIDIA_DRIVER_VERSION.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def library_versions() -> dict[str, str | None]:
    """Installed version of each of ``LIBRARIES``; None for those not installed."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """Commit of the unbottle source checkout, or None when unbottle is not run from a git work tree."""
    return _git_state()[0]


def git_dirty() -> bool | None:
    """Whether the unbottle package sources differ from ``git_commit()`` (None outside a git work tree)."""
    return _git_state()[1]


def _git_state() -> tuple[str | None, bool | None]:
    if _git("ls-files", "--error-unmatch", "__init__.py") is None:
        return None, None  # an installed copy, or a git tree that does not track this package
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", ".") if commit else None
    return commit, None if status is None else bool(status)


def _git(*args: str) -> str | None:
    # Runs in the package directory so the answer is about unbottle, not the caller's project.
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=Path(unbottle.__file__).parent,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def manifest(seed: int | None = None) -> dict[str, Any]:
    """Collect the environment manifest stored with every run.

    Args:
        seed: the run's random seed, recorded as given.

    Returns:
        A JSON-serialisable dict with keys ``unbottle``, ``cpu``, ``cores``, ``memory_total_mib``,
        ``gpus``, ``os``, ``python``, ``libraries``, ``threads``, ``seed``, ``working_dir`` (where
        relative paths on the command line point) and ``created_at`` (ISO-8601, UTC).

    Example:
        >>> import json, unbottle
        >>> json.dumps(unbottle.manifest(seed=0))  # doctest: +SKIP
    """
    commit, dirty = _git_state()
    return {
        "unbottle": {"version": unbottle.__version__, "git_commit": commit, "git_dirty": dirty},
        "cpu": cpu_info(),
        "cores": {"physical": physical_cores(), "logical": logical_cpus()},
        "memory_total_mib": psutil.virtual_memory().total // 2**20,
        "gpus": gpu_info(),
        "os": {"system": platform.system(), "release": platform.release(), "machine": platform.machine()},
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "libraries": library_versions(),
        "threads": thread_settings(),
        "seed": seed,
        "working_dir": os.getcwd(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
