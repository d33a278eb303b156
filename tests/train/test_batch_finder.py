"""The batch-size finder: fits the budget, agrees across ranks, and global-batch arithmetic."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.core.errors import ConfigError
from unbottle.training.batch_finder import accumulation, find_micro_batch

runner = CliRunner()


def test_found_batch_fits_the_budget_and_a_larger_budget_allows_more(tiny_llama):
    import copy

    model = copy.deepcopy(tiny_llama.model)
    small = find_micro_batch(model, 64, budget_bytes=_rss() + 60 * 2**20, max_batch=512)
    large = find_micro_batch(model, 64, budget_bytes=_rss() + 400 * 2**20, max_batch=512)
    assert small["measured"][small["batch"]] <= small["budget_bytes"] or small["batch"] <= 2
    assert large["batch"] >= small["batch"] >= 1
    with pytest.raises(ConfigError, match="over the memory budget"):
        find_micro_batch(model, 64, budget_bytes=1e6)


def _rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss


def test_global_batch_must_be_a_multiple_of_micro_batch_times_ranks():
    assert accumulation(None, 8, 2) == 1
    assert accumulation(32, 8, 2) == 2
    with pytest.raises(ConfigError, match="not a multiple of micro-batch 8 × 2 process"):
        accumulation(24, 8, 2)


def test_cli_auto_batch_and_global_batch(tmp_path):
    from unbottle.training.data import default_corpora

    (tmp_path / "d.txt").write_text(
        default_corpora()[0].files[2].read_text(encoding="utf-8")[:40000], encoding="utf-8"
    )
    common = ["train", "tiny-llama", "--data", str(tmp_path / "d.txt"), "--seq-len", "32", "--max-steps", "2",
              "--threads", "1", "--json", "-q"]  # fmt: skip
    auto = runner.invoke(
        app, [*common, "--batch-size", "auto", "--memory-budget", "300", "-o", str(tmp_path / "a")]
    )
    assert auto.exit_code == 0, auto.output
    doc = json.loads(auto.stdout.strip().splitlines()[-1])
    assert doc["micro_batch"] >= 2 and doc["batch_finder"]["measured"]
    fixed = runner.invoke(
        app, [*common, "--batch-size", "4", "--global-batch", "16", "-o", str(tmp_path / "b")]
    )
    assert json.loads(fixed.stdout.strip().splitlines()[-1])["grad_accum"] == 4
    bad = runner.invoke(
        app, [*common, "--batch-size", "4", "--global-batch", "10", "-o", str(tmp_path / "c")]
    )
    assert bad.exit_code == 2 and "not a multiple" in bad.output
    bad = runner.invoke(app, [*common, "--batch-size", "lots", "-o", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "a positive integer or auto" in bad.output


def test_auto_batch_under_ddp_agrees_across_ranks(tmp_path):
    import subprocess
    import sys

    from unbottle.training.data import default_corpora

    (tmp_path / "d.txt").write_text(
        default_corpora()[0].files[2].read_text(encoding="utf-8")[:40000], encoding="utf-8"
    )
    args = ["train", "tiny-llama", "--data", str(tmp_path / "d.txt"), "--seq-len", "32", "--max-steps", "2",
            "--threads", "1", "--batch-size", "auto", "--memory-budget", "200", "--nproc", "2",
            "-o", str(tmp_path / "o"), "--json", "-q"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "unbottle.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["world"] == 2 and doc["micro_batch"] >= 2  # one value, the minimum over both ranks
    assert all(r["tokens"] == doc["micro_batch"] * 2 * 32 for r in doc["history"])
