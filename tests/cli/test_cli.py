"""The command line: JSON last line, stored runs rebuilt from raw samples, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app

FAST = [
    "--min-time",
    "0",
    "--min-repeats",
    "2",
    "--warmup",
    "0",
    "--new-tokens",
    "4",
    "--threads",
    "1",
    "--prompt-lengths",
    "8",
    "--batch-sizes",
    "1,2",
    "--quiet",
]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def last_json(output: str):
    return json.loads(output.strip().splitlines()[-1])


def test_bench_json_last_line_has_headline_metrics_and_manifest():
    result = run("bench", "tiny-llama", *FAST, "--json")
    assert result.exit_code == 0, result.output
    doc = last_json(result.stdout)
    assert doc["kind"] == "bench" and doc["status"] == "complete"
    assert [d["batch_size"] for d in doc["headline"]["decode"]] == [1, 2]
    assert doc["headline"]["decode"][0]["tokens_per_s"]["p50"] > 0
    assert doc["headline"]["decode"][0]["token_latency_s"]["p99"] > 0
    assert doc["headline"]["decode"][0]["ttft_s"]["p50"] > 0
    assert doc["headline"]["prefill"][0]["prompt_length"] == 8
    assert doc["headline"]["peak_rss_mib"] > 0
    assert doc["threads"]["torch_num_threads"] == 1
    assert "avx2" in doc["manifest"]["cpu"]["flags"] or doc["manifest"]["cpu"]["flags"] == {}
    assert doc["model"]["architecture"] == "llama"


def test_runs_show_last_rebuilds_the_same_document_from_stored_samples():
    bench = last_json(run("bench", "tiny-llama", *FAST, "--json").stdout)
    shown = run("runs", "show", "last", "--json")
    assert shown.exit_code == 0, shown.output
    again = last_json(shown.stdout)
    assert again["run_id"] == bench["run_id"]
    assert again["metrics"] == bench["metrics"]
    assert again["headline"] == bench["headline"]
    assert "decode" in shown.stdout and "95% CI" in shown.stdout, "the table is printed too"


def test_runs_list_shows_runs_newest_first():
    run("bench", "tiny-llama", *FAST, "--scenarios", "prefill")
    run("bench", "tiny-llama", *FAST, "--scenarios", "decode")
    listed = last_json(run("runs", "list", "--json").stdout)
    assert [r["id"] for r in listed] == [2, 1]
    assert all(r["status"] == "complete" for r in listed)


def test_models_lists_the_default_and_tiny_models():
    names = [m["name"] for m in last_json(run("models", "--json").stdout)]
    assert {"smollm2-135m", "tiny-llama", "tiny-bert"} <= set(names)


def test_env_json_has_cpu_flags_threads_and_versions():
    doc = last_json(run("env", "--json").stdout)
    assert doc["libraries"]["torch"].startswith("2.13")
    assert doc["cores"]["logical"] >= 1 and "threads" in doc


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bench", "/no/such/model"], ["no such file or folder", "/no/such/model"]),
        (["bench", "smolm2-135m"], ["did you mean 'smollm2-135m'", "available:"]),
        (["bench", "tiny-llama", "--batch-sizes", "0"], ["--batch-sizes contains 0", "positive"]),
        (["bench", "tiny-llama", "--prompt-lengths", "-5"], ["--prompt-lengths contains -5"]),
        (["bench", "tiny-llama", "--prompt-lengths", "a,b"], ["--prompt-lengths 'a,b'", "comma-separated"]),
        (["bench", "tiny-llama", "--threads", "4096"], ["--threads 4096", "use 1.."]),
        (["bench", "tiny-bert", "--scenarios", "decode", *FAST], ["masked-lm", "need a causal-lm"]),
        (["runs", "show", "99"], ["no run 99"]),
    ],
)
def test_bad_input_gives_one_error_line_and_nonzero_exit(args, words):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    text = " ".join(lines)
    assert text.startswith("error:"), result.stderr
    for word in words:
        assert word in text


def test_bad_folder_from_a_real_process_has_no_traceback(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    proc = subprocess.run(
        [sys.executable, "-m", "unbottle.cli", "bench", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "has no weights" in proc.stderr and "safetensors" in proc.stderr
