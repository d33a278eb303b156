"""A run killed with SIGKILL mid-benchmark keeps every measurement it had committed, in an intact file."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from unbottle.store import Store

# Writes one measurement every 0.2 s forever; measurement i holds samples [i, i + 0.1, i / 3].
_WRITER = textwrap.dedent(
    """
    import sys, time
    from unbottle.core.measurement import Measurement
    from unbottle.store import Store

    store = Store(sys.argv[1])
    run_id = store.start_run("bench", "tiny", {"loop": "forever"}, {"host": "test"}, argv=sys.argv)
    i = 0
    while True:
        samples = [float(i), i + 0.1, i / 3]
        store.add_measurement(run_id, Measurement(f"m{i}", "s", samples, scenario="decode"))
        i += 1
        time.sleep(0.2)
    """
)


def _wait_for_measurements(root: Path, count: int, proc: subprocess.Popen, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"writer exited early: {proc.stderr.read().decode()}"
        with Store(root) as store:
            runs = store.list_runs()
            seen = len(store.measurements(runs[0].id)) if runs else 0
        if seen >= count:
            return seen
        time.sleep(0.05)
    pytest.fail(f"the writer did not commit {count} measurements within {timeout_s} s")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_run_loses_no_committed_measurement(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stderr=subprocess.PIPE) as proc:
        try:
            seen = _wait_for_measurements(tmp_path, 2, proc, timeout_s=4.0)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)  # reap it, so its pid is really gone and not a zombie
    assert proc.returncode == -signal.SIGKILL

    with Store(tmp_path) as store:
        run = store.get_run("last")
        measurements = store.measurements(run.id)
    assert (run.kind, run.model, run.pid, run.status) == ("bench", "tiny", proc.pid, "running")
    assert run.effective_status == "interrupted"
    assert len(measurements) >= seen >= 2
    for i, m in enumerate(measurements):
        assert (m.name, m.unit, m.scenario) == (f"m{i}", "s", "decode")
        assert m.samples == [float(i), i + 0.1, i / 3], f"measurement {i} changed on disk"
    with closing(sqlite3.connect(tmp_path / "unbottle.db")) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
