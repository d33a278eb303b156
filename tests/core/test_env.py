"""Checks of the environment manifest: complete, JSON-ready, fast, and parsed correctly from fixtures."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import torch

from unbottle.core import env

SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 fma avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: SecondBlockMustBeIgnored
model name\t: Not this one
flags\t\t: fpu
"""

ZEN3 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD Ryzen 9 5950X 16-Core Processor
flags\t\t: fpu sse sse2 fma avx avx2 sha_ni
"""

GRAVITON = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp
CPU implementer\t: 0x41
"""


def test_parse_cpuinfo_reads_amx_and_avx512_flags_from_first_block():
    info = env.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["vendor"] == "GenuineIntel"
    assert info["flags"] == dict.fromkeys(env.CPU_FLAGS, True)


def test_parse_cpuinfo_marks_missing_flags_false_on_avx2_only_cpu():
    info = env.parse_cpuinfo(ZEN3)
    assert info["vendor"] == "AuthenticAMD"
    assert [f for f, present in info["flags"].items() if present] == ["avx2", "fma"]


def test_parse_cpuinfo_handles_arm_without_model_name():
    info = env.parse_cpuinfo(GRAVITON)
    assert info["model"] is None
    assert info["vendor"] == "0x41"
    assert not any(info["flags"].values())


def test_cpu_info_falls_back_to_empty_flags_without_proc_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(env, "_CPUINFO", tmp_path / "missing")
    info = env.cpu_info()
    assert info["flags"] == {}
    assert info["torch_capability"] == torch.backends.cpu.get_cpu_capability()


def test_manifest_is_json_serialisable_with_all_keys():
    data = json.loads(json.dumps(env.manifest(seed=7)))
    expected = (
        "unbottle cpu cores memory_total_mib gpus os python libraries threads seed working_dir created_at"
    )
    assert set(data) == set(expected.split())
    assert data["seed"] == 7
    assert set(data["unbottle"]) == {"version", "git_commit", "git_dirty"}
    assert data["cores"]["logical"] >= 1 and data["cores"]["physical"] >= 1
    assert data["memory_total_mib"] > 0
    assert data["libraries"]["torch"] == torch.__version__
    assert data["created_at"].endswith("+00:00")


def test_manifest_takes_under_one_second_once_torch_is_imported():
    env.manifest()  # warm-up: first CUDA probe
    start = time.perf_counter()
    env.manifest()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"manifest() took {elapsed:.3f} s"


def test_thread_settings_reflects_torch_set_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        settings = env.thread_settings()
    finally:
        torch.set_num_threads(before)
    assert settings["torch_num_threads"] == 1
    assert settings["torch_num_interop_threads"] == torch.get_num_interop_threads()
    assert settings["OMP_NUM_THREADS"] == "3"
    assert settings["MKL_NUM_THREADS"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: gpu_info is not empty")
def test_gpu_info_is_empty_without_cuda():
    assert env.gpu_info() == []


def test_library_versions_gives_none_for_missing_packages(monkeypatch):
    monkeypatch.setattr(env, "LIBRARIES", ("numpy", "surely-not-an-installed-package"))
    versions = env.library_versions()
    assert versions["numpy"] is not None
    assert versions["surely-not-an-installed-package"] is None


def test_git_commit_is_a_full_sha_or_none():
    commit = env.git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit), commit
    assert (env.git_dirty() is None) == (commit is None)


def test_git_commit_is_none_when_git_times_out(monkeypatch):
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(cmd=args[0], timeout=kwargs.get("timeout"))

    monkeypatch.setattr(env.subprocess, "run", hang)
    assert env.git_commit() is None
    assert env.git_dirty() is None


def test_logical_cpus_respects_affinity_and_physical_cores_is_positive():
    assert 1 <= env.logical_cpus() <= (env.psutil.cpu_count() or 1)
    assert env.physical_cores() >= 1


def _write_cache(root, cpu: int, index: int, level: int, kind: str, size: str, shared: str) -> None:
    folder = root / f"cpu{cpu}" / "cache" / f"index{index}"
    folder.mkdir(parents=True)
    for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (folder / name).write_text(f"{value}\n")


def test_last_level_cache_counts_one_instance_per_socket_from_sysfs(tmp_path, monkeypatch):
    # Two sockets of two CPUs, each socket with a 300 MiB L3 (an AMX Xeon): cpu0 sees one instance.
    for cpu in range(4):
        shared = "0-1" if cpu < 2 else "2-3"
        _write_cache(tmp_path, cpu, 0, 1, "Data", "48K", str(cpu))
        _write_cache(tmp_path, cpu, 1, 1, "Instruction", "32K", str(cpu))
        _write_cache(tmp_path, cpu, 2, 2, "Unified", "2048K", str(cpu))
        _write_cache(tmp_path, cpu, 3, 3, "Unified", "307200K", shared)
    monkeypatch.setattr(env, "_SYSFS_CPU", tmp_path)
    llc = env.last_level_cache()
    assert llc == {
        "level": 3,
        "bytes": 300 * 2**20,
        "instances": 2,
        "total_bytes": 600 * 2**20,
        "source": "sysfs",
    }


def test_last_level_cache_is_none_when_neither_sysfs_nor_lscpu_tells(tmp_path, monkeypatch):
    def no_lscpu(*args, **kwargs):
        raise FileNotFoundError("lscpu")

    monkeypatch.setattr(env, "_SYSFS_CPU", tmp_path / "missing")
    monkeypatch.setattr(env.subprocess, "run", no_lscpu)
    assert env.last_level_cache() is None
    assert env.cpu_info()["llc"] is None


def test_parse_lscpu_caches_reads_bytes_and_instances():
    caches = [
        {"name": "L1d", "one-size": "49152", "all-size": "98304", "type": "Data", "level": 1},
        {"name": "L1i", "one-size": "32768", "all-size": "65536", "type": "Instruction", "level": 1},
        {"name": "L3", "one-size": "33554432", "all-size": "100663296", "type": "Unified", "level": 3},
    ]
    llc = env.parse_lscpu_caches(caches)
    assert (llc["level"], llc["bytes"], llc["instances"]) == (3, 32 * 2**20, 3)
    assert llc["total_bytes"] == 96 * 2**20 and llc["source"] == "lscpu"
    assert env.parse_lscpu_caches([{"type": "Instruction", "level": 1, "one-size": "32768"}]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("32768K", 32 * 2**20), ("1M", 2**20), ("33554432", 32 * 2**20), ("2 MiB", 2 * 2**20), ("?", None)],
)
def test_parse_cache_size_reads_sysfs_and_lscpu_sizes(text, expected):
    assert env.parse_cache_size(text) == expected


def test_manifest_last_level_cache_equals_sysfs():
    root = env._SYSFS_CPU / "cpu0" / "cache"
    if not root.is_dir():
        pytest.skip(f"{root} is not there: this OS does not describe its caches in sysfs")
    sizes = {}
    for index in root.glob("index*"):
        if (index / "type").read_text().strip() in ("Data", "Unified"):
            size = (index / "size").read_text().strip()
            sizes[int((index / "level").read_text())] = int(size.rstrip("KMG")) * {
                "K": 2**10,
                "M": 2**20,
                "G": 2**30,
            }.get(size[-1], 1)
    llc = env.manifest()["cpu"]["llc"]
    assert llc["level"] == max(sizes), llc
    assert llc["bytes"] == sizes[max(sizes)], (llc, sizes)
    assert llc["total_bytes"] is None or llc["total_bytes"] >= llc["bytes"]
