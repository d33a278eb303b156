"""`unbottle eval`, `ab` and `compare` end to end on tiny models: JSON, storage, goals, exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from unbottle.cli.main import app

AB_FAST = ["--rounds", "4", "--new-tokens", "4", "--threads", "1", "--quiet"]
EVAL_FAST = ["--eval-tokens", "600", "--window", "128", "--threads", "1", "--quiet"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def last_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eval_reports_perplexity_and_accuracy_with_cis():
    doc = last_json(
        run(
            "eval",
            "tiny-llama",
            *EVAL_FAST,
            "--task",
            "cause_and_effect/one_sentence",
            "--max-items",
            "10",
            "--json",
        )
    )
    evals = {e["metric"]: e for e in doc["evals"]}
    ppl = evals["perplexity"]
    assert 1 < ppl["value"] < 10_000 and ppl["ci95"][0] <= ppl["value"] <= ppl["ci95"][1]
    assert ppl["details"]["bos_prepended"] is True and ppl["n_samples"] >= 4
    assert evals["accuracy"]["n_samples"] == 10 and 0 <= evals["accuracy"]["value"] <= 1
    shown = last_json(run("runs", "show", "last", "--json"))
    assert shown["evals"] == doc["evals"], "runs show rebuilds the same document from the store"


def test_eval_bad_text_path_is_one_error_line(tmp_path):
    missing = run("eval", "tiny-llama", "--eval-text", str(tmp_path / "nope.txt"), "--quiet")
    assert missing.exit_code == 2 and missing.stderr.startswith("error:")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run("eval", "tiny-llama", "--eval-text", str(empty), "--quiet")
    assert result.exit_code == 2 and "empty" in result.stderr


def test_ab_a_vs_a_reports_ratio_ci_and_records_a_noise_floor():
    doc = last_json(run("ab", "tiny-llama", "tiny-llama", *AB_FAST, "--json"))
    tps = doc["comparison"]["metrics"]["decode.tokens_per_s"]
    assert tps["ratio"]["ci_low"] <= tps["ratio"]["point"] <= tps["ratio"]["ci_high"]
    assert doc["comparison"]["a_vs_a"] is True
    assert set(doc["comparison"]["noise_floor_pct"]) == {
        "decode.tokens_per_s",
        "decode.token_latency",
        "decode.ttft",
        "decode.request_latency",
    }
    assert doc["comparison"]["overall"] == "no goals"


def test_ab_uses_the_stored_noise_floor_for_another_model(tmp_path, tiny_llama):
    folder = tmp_path / "copy"
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    floor_run = last_json(run("ab", "tiny-llama", "tiny-llama", *AB_FAST, "--json"))["run_id"]
    doc = last_json(run("ab", "tiny-llama", str(folder), *AB_FAST, "--json"))
    assert doc["comparison"]["noise_floor_run"] == floor_run
    assert doc["comparison"]["metrics"]["decode.tokens_per_s"]["noise_floor_pct"] is not None


def test_ab_with_eval_pairs_perplexity_windows_exactly():
    doc = last_json(
        run(
            "ab",
            "tiny-llama",
            "tiny-llama",
            *AB_FAST,
            "--eval",
            "--eval-tokens",
            "600",
            "--goal",
            "perplexity:percent-max-degradation=1",
            "--json",
        )
    )
    ppl = doc["comparison"]["metrics"]["perplexity"]
    assert ppl["pct"]["point"] == 0 and ppl["pct"]["ci_low"] == 0 and ppl["pct"]["ci_high"] == 0
    assert ppl["verdict"] == "no significant difference"
    assert doc["comparison"]["goals"][0]["passed"] is True
    assert {a["metric"] for a in doc["comparison"]["agreement"]} == {
        "kl_divergence",
        "top1_agreement",
        "greedy_match_length",
    }


def test_ab_failing_goal_exits_1_with_fail_on_regression():
    result = run(
        "ab",
        "tiny-llama",
        "tiny-llama",
        *AB_FAST,
        "--goal",
        "decode.tokens_per_s:percent-min-improvement=50",
        "--fail-on-regression",
    )
    assert result.exit_code == 1, result.output
    assert "overall: fail" in result.stdout


def test_ab_goal_on_unknown_metric_is_refused_before_running():
    result = run("ab", "tiny-llama", "tiny-llama", *AB_FAST, "--goal", "speed:min-improvement=1")
    assert result.exit_code == 2
    assert "goal names unknown metric 'speed'" in result.stderr and "decode.tokens_per_s" in result.stderr


def test_compare_two_bench_runs_and_two_eval_runs():
    bench = [
        "--scenarios",
        "decode",
        "--batch-sizes",
        "1",
        "--new-tokens",
        "4",
        "--min-time",
        "0",
        "--min-repeats",
        "5",
        "--threads",
        "1",
        "--quiet",
    ]
    a = last_json(run("bench", "tiny-llama", *bench, "--json"))["run_id"]
    b = last_json(run("bench", "tiny-llama", *bench, "--json"))["run_id"]
    doc = last_json(run("compare", str(a), str(b), "--json"))
    assert {"decode.tokens_per_s", "decode.token_latency", "decode.ttft"} <= set(doc["comparison"]["metrics"])
    ea = last_json(run("eval", "tiny-llama", *EVAL_FAST, "--json"))["run_id"]
    eb = last_json(run("eval", "tiny-llama", *EVAL_FAST, "--json"))["run_id"]
    evals = last_json(run("compare", str(ea), str(eb), "--json"))
    assert evals["comparison"]["metrics"]["perplexity"]["pct"]["point"] == 0
    mixed = run("compare", str(a), str(ea))
    assert mixed.exit_code == 2 and "two bench runs or two eval runs" in mixed.stderr
    failing = run(
        "compare", str(ea), str(eb), "--goal", "perplexity:percent-min-improvement=5", "--fail-on-regression"
    )
    assert failing.exit_code == 1


def test_a_stored_ab_run_is_recomputed_exactly_from_its_stored_inputs():
    from unbottle.comparison.runs import recompute_ab
    from unbottle.store import Store

    doc = last_json(
        run("ab", "tiny-llama", "tiny-llama", *AB_FAST, "--eval", "--eval-tokens", "600", "--json")
    )
    store = Store()
    stored = store.get_run(doc["run_id"])
    again = recompute_ab(stored, store.measurements(stored.id))
    for name, cmp in again.items():
        expected = {k: v for k, v in doc["comparison"]["metrics"][name].items() if k != "ratio"}
        assert cmp.to_dict() == expected, name


def test_compare_refuses_a_run_with_itself_and_eval_runs_on_different_texts(tmp_path):
    first = last_json(run("eval", "tiny-llama", *EVAL_FAST, "--json"))["run_id"]
    itself = run("compare", str(first), str(first))
    assert itself.exit_code == 2 and f"run {first} given twice" in itself.stderr
    text = tmp_path / "other.txt"
    text.write_text("An entirely different text, repeated to be long enough. " * 200)
    other = last_json(run("eval", "tiny-llama", *EVAL_FAST, "--eval-text", str(text), "--json"))["run_id"]
    refused = run("compare", str(first), str(other))
    assert refused.exit_code == 2 and "scored different samples for perplexity (corpus" in refused.stderr


def test_compare_of_bench_runs_with_other_threads_says_so_beside_the_numbers():
    fast = ["--scenarios", "decode", "--new-tokens", "4", "--min-repeats", "3", "--min-time", "0", "--quiet"]
    one = last_json(run("bench", "tiny-llama", *fast, "--threads", "1", "--json"))["run_id"]
    two = last_json(run("bench", "tiny-llama", *fast, "--threads", "2", "--json"))["run_id"]
    result = run("compare", str(one), str(two), "--json")
    doc = last_json(result)
    assert any(c.startswith("threads differs: 1 (run") for c in doc["comparison"]["caveats"])
    assert "caveat: threads differs" in result.stdout


def test_compare_of_bench_runs_counts_each_repeat_once_and_applies_the_hosts_noise_floor():
    bench = ["--scenarios", "decode", "--batch-sizes", "1", "--new-tokens", "4", "--min-time", "0"]
    bench += ["--min-repeats", "5", "--threads", "1", "--quiet", "--json"]
    floor_run = last_json(run("ab", "tiny-llama", "tiny-llama", *AB_FAST, "--json"))
    a = last_json(run("bench", "tiny-llama", *bench))["run_id"]
    b = last_json(run("bench", "tiny-llama", *bench))["run_id"]
    metrics = last_json(run("compare", str(a), str(b), "--json"))["comparison"]["metrics"]
    steps = metrics["decode.token_latency"]
    assert steps["a"]["n"] == 5 and steps["pct"]["n"] == 10  # 5 repeats a side, not 5 x 3 steps
    floors = floor_run["comparison"]["noise_floor_pct"]
    assert metrics["decode.tokens_per_s"]["noise_floor_pct"] == floors["decode.tokens_per_s"]


def test_compare_of_bench_runs_with_one_repeat_each_is_refused_with_the_fix():
    bench = ["--scenarios", "decode", "--new-tokens", "4", "--min-time", "0", "--min-repeats", "1"]
    a = last_json(run("bench", "tiny-llama", *bench, "--threads", "1", "--quiet", "--json"))["run_id"]
    b = last_json(run("bench", "tiny-llama", *bench, "--threads", "1", "--quiet", "--json"))["run_id"]
    refused = run("compare", str(a), str(b))
    assert (
        refused.exit_code == 2
        and "fewer than 2 repeats" in refused.stderr
        and "--min-repeats" in refused.stderr
    )


def test_ab_with_speculative_lookup_measures_b_speculating_against_a_plain():
    doc = last_json(run("ab", "tiny-llama", "tiny-llama", *AB_FAST, "--speculative", "lookup", "--json"))
    comparison = doc["comparison"]
    assert comparison["a_vs_a"] is False  # the same model, but not the same decoding
    assert 0.0 <= comparison["speculation"]["acceptance"] <= 1.0
    assert comparison["speculation"]["tokens_per_step"] >= 1.0
    refused = run("ab", "tiny-llama", "tiny-llama", "--speculative", "lookup", "--scenario", "prefill")
    assert refused.exit_code == 2
    assert "allowed: lookup, draft=MODEL, with the decode scenario" in refused.stderr
