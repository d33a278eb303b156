"""A bench killed mid-way (kill -9) keeps every measurement it finished, and says it was interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.store import Store


def test_bench_killed_midway_keeps_what_it_measured():
    lengths = ",".join(str(8 * i) for i in range(1, 41))  # 40 prefill points, ~0.3 s each
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unbottle.cli",
            "bench",
            "tiny-llama",
            "--scenarios",
            "prefill",
            "--prompt-lengths",
            lengths,
            "--min-time",
            "0.3",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    store = Store()
    deadline = time.monotonic() + 90
    seen = 0
    try:
        while time.monotonic() < deadline and seen < 8:
            time.sleep(0.2)
            runs = store.list_runs(limit=1)
            seen = len(store.measurements(runs[0].id)) if runs else 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert seen >= 8, "the bench should have stored a few measurements before the kill"

    shown = CliRunner().invoke(app, ["runs", "show", "last", "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout.strip().splitlines()[-1])
    assert doc["status"] == "interrupted"
    assert len(doc["metrics"]) >= seen, "everything seen before the kill is still there"
    assert len(doc["metrics"]) < 40 * 4, "the run was really cut short"
    for metric in doc["metrics"]:
        if metric["name"] == "prefill.latency":
            assert metric["n"] >= 1 and metric["p50"] > 0
