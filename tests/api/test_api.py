"""The verbs from Python: each records its run as the CLI does and returns what ``--json`` prints.

The main job in a few lines, on tiny-llama (size objective: no speed A/B, so it stays quick), then
the run is listed by ``unbottle runs list``, reported by ``unbottle report``, and the document equals
the one ``unbottle runs show --json`` rebuilds from the store.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import unbottle
from unbottle.cli.main import app
from unbottle.core.errors import ConfigError, TrainError
from unbottle.store import Store


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _shown(run_id: int) -> dict:
    return json.loads(_cli("runs", "show", str(run_id), "--json").strip().splitlines()[-1])


def test_optimize_from_python_is_a_stored_run_that_runs_list_and_report_show(tmp_path):
    doc = unbottle.optimize(
        "tiny-llama",
        objective="size",
        candidates=("wo-int8",),
        time_budget="10m",
        screen_tokens=256,
        eval_tokens=1024,
        threads=1,
        output=tmp_path / "fast",
    )
    assert (doc["kind"], doc["status"]) == ("optimize", "complete")
    assert doc["optimize"]["winner"]["key"] == "wo-int8"
    assert (tmp_path / "fast" / "report.html").exists()
    assert doc == _shown(doc["run_id"])
    assert f"│ {doc['run_id']} " in _cli("runs", "list")
    assert "optimize" in _cli("report", str(doc["run_id"]), "--format", "md")
    assert Store().get_run(doc["run_id"]).argv is None  # started from Python, not a command line


def test_bench_evaluate_and_compare_from_python(tmp_path):
    fast = {"threads": 1, "warmup": 0, "min_repeats": 1, "min_time_s": 0.0}
    bench = unbottle.bench("tiny-llama", scenarios=("decode",), batch_sizes=(1,), new_tokens=4, **fast)
    assert bench["kind"] == "bench" and bench == _shown(bench["run_id"])
    evals = [
        unbottle.evaluate("tiny-llama", eval_tokens=256, window=128, stride=128, threads=1) for _ in "ab"
    ]
    assert evals[0]["evals"][0]["metric"] == "perplexity"
    compared = unbottle.compare(evals[0]["run_id"], evals[1]["run_id"])
    assert compared["kind"] == "compare" and "perplexity" in json.dumps(compared["comparison"])
    report = unbottle.report(compared["run_id"], tmp_path / "r.md", format="md")
    assert report.read_text().strip()


def test_ab_from_python_with_goals_as_text():
    doc = unbottle.ab(
        "tiny-llama", "tiny-llama", rounds=3, prompt_length=8, new_tokens=4, threads=1,
        goals=["decode.tokens_per_s:percent-max-degradation=50"],
    )  # fmt: skip
    assert doc["kind"] == "ab" and doc["comparison"]["a_vs_a"]
    assert doc == _shown(doc["run_id"])


def test_settings_are_checked_by_their_field_names_before_any_run():
    with pytest.raises(
        ConfigError, match=r"unknown setting\(s\) \['rounds'\] given; BenchConfig takes: .*min_repeats"
    ):
        unbottle.bench("tiny-llama", rounds=3)
    with pytest.raises(ConfigError, match=r"goal names unknown metric 'speed'"):
        unbottle.ab("tiny-llama", "tiny-llama", goals=["speed:percent-max-degradation=5"])
    with pytest.raises(ConfigError, match=r"time_budget='soon' given"):
        unbottle.optimize("tiny-llama", time_budget="soon")
    assert Store().list_runs() == []


def test_apply_from_python_saves_a_loadable_recipe_and_records_it(tmp_path):
    doc = unbottle.apply("tiny-llama", ["wo-int8"], tmp_path / "int8", threads=1)
    assert doc["reports"][0]["name"] == "wo-int8" and Store().get_run(doc["run_id"]).kind == "apply"
    assert unbottle.load(str(tmp_path / "int8")).info.source_kind == "recipe"
    with pytest.raises(ConfigError, match="exists"):
        unbottle.apply("tiny-llama", ["wo-int8"], tmp_path / "int8")


def test_train_and_distill_from_python_are_stored_runs(tmp_path):
    doc = unbottle.train(
        "tiny-llama", max_steps=3, seq_len=32, batch_size=4, threads=1, output=str(tmp_path / "t")
    )
    assert doc["kind"] == "train" and doc["summary"]["steps"] == 3 and Store().get_run(doc["run_id"])
    assert unbottle.load(doc["model_dir"]).info.n_parameters == doc["model"]["n_parameters"]
    with pytest.raises(ConfigError, match=r"holds checkpoints; set resume=True to continue"):
        unbottle.train("tiny-llama", max_steps=3, output=str(tmp_path / "t"))
    compared = unbottle.train("tiny-llama", compare=("base", "bf16"), rounds=2, segment_steps=1,
                              seq_len=32, batch_size=2, threads=1, output=str(tmp_path / "c"))  # fmt: skip
    assert compared["compare"]["reference"] == "base"
    distilled = unbottle.distill(
        "tiny-llama", student="layers=1", max_steps=2, seq_len=32, batch_size=2, eval_tokens=256,
        window=64, baseline=False, threads=1, output=str(tmp_path / "d"),
    )  # fmt: skip
    assert distilled["kind"] == "distill" and Store().get_run(distilled["run_id"]).status == "complete"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"lr": -1}, r"lr=-1 given; allowed: a finite number > 0"),
        ({"lr": float("nan")}, r"lr=nan given"),
        ({"seq_len": 0}, r"seq_len=0 given; allowed: an integer >= 2"),
        ({"eval_every": -1}, r"eval_every=-1 given"),
        ({"checkpoint_every": -5}, r"checkpoint_every=-5 given"),
        ({"batch_size": "many"}, r"batch_size='many' given"),
        ({"data_mode": "fast"}, r"data_mode='fast' given; allowed: cache, on-the-fly"),
        ({"compare": ("base", "bf16"), "rounds": 1}, r"rounds=1 given"),
    ],
)
def test_bad_training_settings_are_refused_by_field_name_before_any_work(settings, words):
    with pytest.raises(ConfigError, match=words):
        unbottle.train("tiny-llama", **settings)
    assert Store().list_runs() == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--lr", "-1"], "--lr -1.0 given"),
        (["--seq-len", "0"], "--seq-len 0 given"),
        (["--eval-every", "-1"], "--eval-every -1 given"),
        (["--checkpoint-every", "-5"], "--checkpoint-every -5 given"),
    ],
)
def test_the_cli_names_the_same_bad_settings_by_flag(args, words):
    result = CliRunner().invoke(app, ["train", "tiny-llama", *args])
    assert result.exit_code == 2 and words in result.output, result.output
    bad = CliRunner().invoke(app, ["distill", "tiny-llama", "--lr", "nan"])
    assert bad.exit_code == 2 and "--lr nan given" in bad.output, bad.output


def test_a_diverging_run_stops_with_one_clear_error_and_is_stored_failed(tmp_path):
    with pytest.raises(
        TrainError, match=r"training loss became nan at step \d+ with lr=1000000.0: the run diverged"
    ):
        unbottle.train(
            "tiny-llama", lr=1e6, max_steps=20, seq_len=32, batch_size=4, threads=1, output=str(tmp_path)
        )
    run = Store().list_runs(limit=1)[0]
    assert run.status == "failed" and "diverged" in run.error


def test_sequences_longer_than_the_models_positions_are_refused_before_any_work():
    with pytest.raises(
        ConfigError, match=r"seq_len=100000 is 100000 tokens but 'tiny-llama' takes at most \d+"
    ):
        unbottle.train("tiny-llama", seq_len=100_000)
    with pytest.raises(ConfigError, match=r"prompt_length \+ decode_tokens \+ 1 is 100017 tokens"):
        unbottle.profile("tiny-llama", prompt_length=100_000, threads=1)
