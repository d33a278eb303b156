"""``unbottle train`` on tiny-llama: a run, its resume, what it stores and saves, and bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.models import resolve
from unbottle.store import Store

runner = CliRunner()


def _json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def _data(tmp_path):
    from unbottle.training.data import default_corpora

    text = default_corpora()[0].files[1].read_text(encoding="utf-8")[:40000]
    (tmp_path / "d.txt").write_text(text, encoding="utf-8")
    return str(tmp_path / "d.txt")


def test_train_reports_breakdown_validation_and_mfu_then_resumes(tmp_path):
    args = ["train", "tiny-llama", "--data", _data(tmp_path), "--seq-len", "32", "--batch-size", "4",
            "--threads", "1", "-o", str(tmp_path / "run"), "--json", "-q"]  # fmt: skip
    first = runner.invoke(app, [*args, "--max-steps", "6"])
    assert first.exit_code == 0, first.output
    doc = _json(first)
    s = doc["summary"]
    assert s["steps"] == 6 and s["tokens_per_s"] > 0 and 0 < s["mfu"] < 1.5
    assert abs(sum(s["breakdown"].values()) - 1) < 1e-6
    assert doc["validation"][-1]["val_perplexity"] > 1
    assert {f["bound"] for f in doc["diagnosis"]} >= {"compute"}
    assert first.output.count("compute: ") == 1  # the diagnosis is printed
    assert Store().get_run("last").kind == "train"
    assert resolve(doc["model_dir"]).load().info.task == "causal-lm"  # the trained model loads anywhere

    again = runner.invoke(app, [*args, "--max-steps", "6"])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, [*args, "--max-steps", "9", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    doc2 = _json(resumed)
    assert doc2["resumed_from"] == 6 and doc2["summary"]["steps"] == 9
    assert [r["step"] for r in doc2["history"]] == list(range(1, 10))


def test_bad_training_input_fails_clearly(tmp_path):
    (tmp_path / "short.txt").write_text("Only a few words.", encoding="utf-8")
    cases = [
        (
            ["tiny-llama", "--data", str(tmp_path / "short.txt"), "--seq-len", "512"],
            "fewer than one sequence",
        ),
        (["tiny-llama", "--data-mode", "stream"], "allowed: cache, on-the-fly"),
        (["tiny-llama", "--precision", "fp8"], "allowed: fp32, bf16, bf16-pure"),
        (["tiny-bert", "--max-steps", "1"], "trains causal language models"),
        (["tiny-llama", "--data", str(tmp_path / "missing")], "does not exist"),
        (["tiny-llama", "--precision", "fp16"], "use --precision bf16"),
        (["tiny-llama", "--parallel", "zero"], "allowed: ddp, fsdp"),
        (["tiny-llama", "--loss", "sampled"], "allowed: full, chunked, fused"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["train", *args, "-o", str(tmp_path / "o"), "-q"])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def _run(args):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "unbottle.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_process_ddp_and_fsdp_give_the_loss_of_one_process_with_the_same_global_batch(tmp_path):
    common = ["train", "tiny-llama", "--data", _data(tmp_path), "--seq-len", "32", "--max-steps", "4",
              "--threads", "1", "--json", "-q"]  # fmt: skip
    one = _run([*common, "--batch-size", "8", "-o", str(tmp_path / "one")])
    losses_one = [r["loss"] for r in one["history"]]
    for parallel in ("ddp", "fsdp"):
        two = _run([*common, "--batch-size", "4", "--nproc", "2", "--parallel", parallel,
                    "-o", str(tmp_path / parallel)])  # fmt: skip
        assert two["world"] == 2 and one["world"] == 1
        assert [r["loss"] for r in two["history"]] == pytest.approx(losses_one, rel=1e-5, abs=1e-6)
        assert [r["tokens"] for r in two["history"]] == [r["tokens"] for r in one["history"]]
        assert all((r.get("comm_s") is not None) == (parallel == "ddp") for r in two["history"])
        assert (
            _run(["eval", two["model_dir"], "--eval-tokens", "64", "--window", "32", "--json", "-q"])[
                "evals"
            ][0]["value"]
            > 1
        )


def test_an_fsdp_run_resumes_from_its_gathered_checkpoint(tmp_path):
    common = ["train", "tiny-llama", "--data", _data(tmp_path), "--seq-len", "32", "--max-steps", "4",
              "--threads", "1", "--batch-size", "4", "--nproc", "2", "--parallel", "fsdp",
              "--checkpoint-every", "2", "-o", str(tmp_path / "f"), "--json", "-q"]  # fmt: skip
    whole = _run(common)
    (tmp_path / "f" / "latest").write_text("step-0000002", encoding="utf-8")  # as if killed after step 2
    resumed = _run([*common, "--resume"])
    assert resumed["resumed_from"] == 2
    assert [r["loss"] for r in resumed["history"]] == pytest.approx(
        [r["loss"] for r in whole["history"]], rel=1e-5, abs=1e-6
    )


def test_a_checkpoint_resumes_only_with_the_same_number_of_processes(tmp_path):
    args = ["train", "tiny-llama", "--data", _data(tmp_path), "--seq-len", "32", "--batch-size", "4",
            "--threads", "1", "-o", str(tmp_path / "run"), "-q"]  # fmt: skip
    assert runner.invoke(app, [*args, "--max-steps", "2"]).exit_code == 0
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "unbottle.cli", *args, "--max-steps", "3", "--resume", "--nproc", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "resume it with --nproc 1" in proc.stderr


def test_strategy_ab_interleaves_segments_from_the_same_start(tmp_path):
    args = ["train", "tiny-llama", "--data", _data(tmp_path), "--seq-len", "32", "--batch-size", "4",
            "--threads", "1", "-o", str(tmp_path / "cmp"), "--compare", "naive,base,bf16",
            "--rounds", "2", "--segment-steps", "2", "--json", "-q"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = _json(result)["compare"]
    assert doc["reference"] == "naive" and doc["order"] == [
        ["naive", "base", "bf16"],
        ["base", "bf16", "naive"],
    ]
    base = doc["strategies"]["base"]
    assert len(base["tokens_per_s"]) == 2 and base["speed"]["verdict"] in (
        "better",
        "worse",
        "no significant difference",
    )
    # the cached and the on-the-fly pipelines feed the same batches: identical losses
    assert base["losses"] == pytest.approx(doc["strategies"]["naive"]["losses"], rel=1e-6)
    assert not base["loss_change"]["flagged"]
    bad = runner.invoke(app, ["train", "tiny-llama", "--compare", "base,turbo"])
    assert bad.exit_code == 2 and "give two or more of" in bad.output
