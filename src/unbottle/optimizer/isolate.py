"""Run one trial in a separate worker process, so a crash, hang or memory blow-up is just a result.

A candidate can segfault inside a native kernel, loop forever in a compiler, or allocate past the
machine's memory; in-process, any of those takes the whole search down. The worker gets its input as
JSON on stdin and writes its result atomically to a file; the parent watches wall time and the
worker's resident memory (psutil, including its children) and kills it past either limit. The
outcome says what happened in words a user can act on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import psutil

from unbottle.core.naming import SPEAKS_FLAGS

Status = Literal["ok", "failed", "timeout", "out-of-memory", "crashed"]


@dataclasses.dataclass
class TrialOutcome:
    """How an isolated call ended.

    Attributes:
        status: ``ok``; ``failed`` (the function raised); ``timeout``; ``out-of-memory`` (past the
            limit); ``crashed`` (killed by a signal, e.g. a segfault).
        result: the function's return value (JSON) when ``ok``.
        reason: one line saying what went wrong, empty when ``ok``.
        seconds: wall time of the worker.
        peak_rss_mib: the largest resident memory seen (worker and its children).
        exit_code: the worker's exit code (negative: killed by that signal).
    """

    status: Status
    result: Any = None
    reason: str = ""
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_isolated(
    target: str,
    payload: dict[str, Any],
    timeout_s: float,
    memory_limit_mib: float | None = None,
    poll_s: float = 0.05,
) -> TrialOutcome:
    """Call ``target(payload)`` (``"package.module:function"``) in a fresh Python process.

    Args:
        target: import path of a function taking the payload dict and returning JSON-able data.
        payload: its input (JSON-able).
        timeout_s: wall-clock limit; the worker is killed past it.
        memory_limit_mib: resident-memory limit for the worker and its children; None for no limit.
        poll_s: how often the parent checks time and memory.
    """
    with tempfile.TemporaryDirectory(prefix="unbottle-trial-") as tmp:
        result_path = Path(tmp) / "result.json"
        # the worker names settings as this process does (flags under the CLI, fields from Python)
        message = json.dumps(
            {
                "target": target,
                "payload": payload,
                "result_path": str(result_path),
                "speaks_flags": SPEAKS_FLAGS.get(),
            }
        )
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "unbottle.optimizer.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        proc.stdin.write(message.encode())
        proc.stdin.close()
        verdict, peak = _watch(proc, start, timeout_s, memory_limit_mib, poll_s)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        outcome = _outcome(proc.returncode, verdict, result_path, stderr, timeout_s, memory_limit_mib, peak)
        outcome.seconds = time.perf_counter() - start
        return outcome


def _watch(
    proc: subprocess.Popen, start: float, timeout_s: float, limit_mib: float | None, poll_s: float
) -> tuple[str, float]:
    """Wait for the worker; kill its process group past the time or memory limit."""
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_mib(proc.pid))
        verdict = ""
        if time.perf_counter() - start > timeout_s:
            verdict = "timeout"
        elif limit_mib is not None and peak > limit_mib:
            verdict = "out-of-memory"
        if verdict:
            _kill_group(proc)
            return verdict, peak
        time.sleep(poll_s)
    return "", peak


def _tree_rss_mib(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return 0.0


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _outcome(
    code: int | None,
    verdict: str,
    result_path: Path,
    stderr: str,
    timeout_s: float,
    limit_mib: float | None,
    peak: float,
) -> TrialOutcome:
    base = {"exit_code": code, "peak_rss_mib": peak}
    if verdict == "timeout":
        return TrialOutcome(
            "timeout", reason=f"no result within {timeout_s:g} s; the worker was killed", **base
        )
    if verdict == "out-of-memory":
        return TrialOutcome(
            "out-of-memory",
            reason=f"resident memory reached {peak:.0f} MiB, past the "
            f"{limit_mib:g} MiB limit; the worker was killed",
            **base,
        )
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in {s.value for s in signal.Signals} else str(-code)
        hint = " (possibly the system's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return TrialOutcome("crashed", reason=f"the worker was killed by {name}{hint}", **base)
    if result_path.exists():
        data = json.loads(result_path.read_text(encoding="utf-8"))
        if "error" in data:
            return TrialOutcome("failed", reason=data["error"], **base)
        return TrialOutcome("ok", result=data["result"], **base)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    return TrialOutcome("crashed", reason=f"the worker exited with code {code} and no result: {last}", **base)
