"""``unbottle runs export --mlflow``: stored runs round-trip into a local MLflow database — params are
the configs, metrics the medians and ratios with their intervals, artifacts the report, document,
raw samples and recipe — and exporting again repeats nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import unbottle
from unbottle.api import exporting
from unbottle.cli.main import app
from unbottle.core.env import manifest
from unbottle.core.errors import ConfigError
from unbottle.passes.recipe import RECIPE_FILE
from unbottle.reporting.documents import metric_entry
from unbottle.store import Store

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is a dev dependency")
FAST = {"threads": 1, "warmup": 0, "min_repeats": 2, "min_time_s": 0.0}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _exported(uri: str) -> dict:
    """MLflow's runs of the unbottle experiment by their unbottle run id."""
    client = _client(uri)
    exp = client.get_experiment_by_name("unbottle")
    return {int(r.data.tags["unbottle.run_id"]): r for r in client.search_runs([exp.experiment_id])}


def _artifact(uri: str, run_id: str, path: str) -> str:
    return Path(_client(uri).download_artifacts(run_id, path)).read_text()


def test_runs_round_trip_and_a_second_export_repeats_nothing(tmp_path):
    bench = unbottle.bench("tiny-llama", scenarios=("decode",), batch_sizes=(1,), new_tokens=4, **FAST)
    ab = unbottle.ab("tiny-llama", "tiny-llama", rounds=3, prompt_length=8, new_tokens=4, threads=1)
    applied = unbottle.apply("tiny-llama", ["wo-int8"], tmp_path / "int8", threads=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    doc = unbottle.export_runs(uri)
    assert [e["run"] for e in doc["exported"]] == [bench["run_id"], ab["run_id"], applied["run_id"]]
    runs = _exported(uri)
    store = Store()

    b = runs[bench["run_id"]]
    assert b.info.status == "FINISHED" and b.data.tags["unbottle.kind"] == "bench"
    config = store.get_run(bench["run_id"]).config
    assert json.loads(b.data.params["config.batch_sizes"]) == config["batch_sizes"] == [1]
    assert int(b.data.params["config.new_tokens"]) == 4
    stored = {m.name: m for m in store.measurements(bench["run_id"])}
    entry = metric_entry(stored["decode.tokens_per_s"])
    name = "decode.tokens_per_s/batch_size-1/new_tokens-4/prompt_length-32"
    assert b.data.metrics[name] == pytest.approx(entry["p50"])
    assert b.data.metrics[f"{name}.ci_low"] == pytest.approx(entry["ci95_median"][0])
    samples = json.loads(_artifact(uri, b.info.run_id, "samples.json"))
    assert {s["name"]: s["samples"] for s in samples}["decode.tokens_per_s"] == stored[
        "decode.tokens_per_s"
    ].samples
    assert "<html" in _artifact(uri, b.info.run_id, "report.html")
    assert json.loads(_artifact(uri, b.info.run_id, "document.json"))["run_id"] == bench["run_id"]

    ratio = ab["comparison"]["metrics"]["decode.tokens_per_s"]["ratio"]
    a = runs[ab["run_id"]].data.metrics
    assert a["ratio/decode.tokens_per_s"] == pytest.approx(ratio["point"])
    assert a["ratio/decode.tokens_per_s.ci_high"] == pytest.approx(ratio["ci_high"])
    saved = runs[applied["run_id"]].info.run_id
    recipe = json.loads(_artifact(uri, saved, f"recipe/{RECIPE_FILE}"))
    assert recipe["source"] == "tiny-llama"

    again = unbottle.export_runs(uri)
    assert again["exported"] == [] and len(again["skipped"]) == 3
    assert all(s["why"].startswith("already exported as MLflow run") for s in again["skipped"])
    assert len(_exported(uri)) == 3


def test_a_cut_short_export_is_redone_and_running_runs_wait(tmp_path, monkeypatch):
    store = Store()
    rid = store.start_run("bench", "tiny-llama", {"threads": 1}, manifest())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert unbottle.export_runs(uri)["skipped"] == [
        {"run": rid, "why": "still running: export it when it ends"}
    ]
    store.finish_run(rid, "complete", {"notes": []})
    real = exporting._artifacts
    monkeypatch.setattr(exporting, "_artifacts", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        unbottle.export_runs(uri)
    monkeypatch.setattr(exporting, "_artifacts", real)
    doc = unbottle.export_runs(uri)
    assert [e["run"] for e in doc["exported"]] == [rid]
    assert len(_exported(uri)) == 1  # the cut-short one was deleted, not left beside it


def test_the_cli_exports_and_refuses_what_mlflow_refuses(tmp_path, monkeypatch):
    unbottle.bench("tiny-llama", scenarios=("decode",), batch_sizes=(1,), new_tokens=4, **FAST)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["runs", "export", "--mlflow", uri, "--run", "last", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout.strip().splitlines()[-1])["exported"]) == 1
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    refused = CliRunner().invoke(app, ["runs", "export", "--mlflow", f"file://{tmp_path / 'mlruns'}"])
    assert refused.exit_code == 2 and "give a database such as sqlite:///mlflow.db" in refused.stderr
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a plain folder, where the user opts in
    folder = CliRunner().invoke(app, ["runs", "export", "--mlflow", f"file://{tmp_path / 'mlruns'}"])
    assert folder.exit_code == 0, folder.output


def test_without_mlflow_installed_the_fix_is_named(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ConfigError, match=r"pip install 'unbottle\[mlflow\]'"):
        unbottle.export_runs("sqlite:///x.db")
