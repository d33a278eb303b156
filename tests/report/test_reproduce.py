"""The command that reproduces a run: as recorded when the store has it, rebuilt from the config if not."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys

from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.reporting.reproduce import cli_args, rebuild_args, reproduction
from unbottle.store import Store


@dataclasses.dataclass
class _Run:
    kind: str
    model: str
    config: dict
    argv: list[str] | None = None
    manifest: dict = dataclasses.field(default_factory=dict)
    result: dict | None = None


def test_cli_args_accept_the_console_script_and_python_dash_m_only():
    assert cli_args(["/x/.venv/bin/unbottle", "bench", "m"]) == ["bench", "m"]
    assert cli_args(["/x/src/unbottle/cli/__main__.py", "eval", "m"]) == ["eval", "m"]
    assert cli_args(["/x/site-packages/pytest/__main__.py", "-q"]) is None
    assert cli_args(None) is None and cli_args([]) is None


def test_a_recorded_command_is_shown_as_typed_plus_every_setting_spelled_out():
    config = {"type": "ProfileConfig", "version": 1, "prompt_length": 128, "decode_tokens": 16, "threads": 2}
    repro = reproduction(_Run("profile", "smollm2-135m", config, [".venv/bin/unbottle", "profile", "--json"]))
    assert not repro.reconstructed
    assert repro.commands[0] == "unbottle profile --json"
    assert (
        repro.commands[2]
        == "unbottle profile smollm2-135m --prompt-length 128 --decode-tokens 16 --threads 2"
    )


def test_a_missing_command_is_rebuilt_from_the_config_and_says_so():
    config = {"type": "BenchConfig", "version": 1, "scenarios": ["decode"], "batch_sizes": [1, 4], "seed": 0}
    repro = reproduction(_Run("bench", "./my model", config, None, {"threads": {"OMP_NUM_THREADS": "4"}}))
    assert repro.reconstructed and "reconstructed from the stored config" in repro.notes[0]
    args = shlex.split(repro.commands[0])
    assert args[:4] == ["OMP_NUM_THREADS=4", "unbottle", "bench", "./my model"]
    assert args[4:] == ["--scenarios", "decode", "--batch-sizes", "1,4", "--seed", "0"]


def test_fields_no_flag_sets_are_named_when_they_differ_from_the_default():
    config = {"type": "OptimizeConfig", "version": 1, "model": "m", "screen_rounds": 5, "finalists": 2}
    args, unflagged = rebuild_args("optimize", "m", config)
    assert args[:2] == ["optimize", "m"] and unflagged == ["screen_rounds=5"]


def test_goals_and_candidates_are_repeated_flags():
    config = {
        "model": "m",
        "goals": ["perplexity:percent-max-degradation=2"],
        "candidates": ["wo-int8", "a + b"],
    }
    args, _ = rebuild_args("optimize", "m", config)
    assert args.count("--candidate") == 2 and "a + b" in args
    goal = {"metric": "perplexity", "kind": "max-degradation", "value": 0.5}
    args, _ = rebuild_args("ab", "a vs b", {"model_a": "a", "model_b": "b", "ab": {}, "goals": [goal]})
    assert args == ["ab", "a", "b", "--goal", "perplexity:max-degradation=0.5"]


def test_an_optimisation_also_says_how_to_check_the_saved_model():
    result = {"optimize": {"output": "/out/m"}}
    repro = reproduction(_Run("optimize", "m", {"model": "m"}, ["unbottle", "optimize", "m"], result=result))
    assert "unbottle ab m /out/m --eval" in repro.commands and "unbottle eval /out/m" in repro.commands


def test_a_real_run_records_its_command_line_and_the_report_shows_it(monkeypatch):
    argv = ["/venv/bin/unbottle", "eval", "tiny-llama", "--eval-tokens", "512", "--threads", "1", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    runner = CliRunner()
    assert runner.invoke(app, argv[1:]).exit_code == 0
    run = Store().get_run("last")
    assert run.argv == argv and run.manifest["working_dir"]
    doc = json.loads(runner.invoke(app, ["report", "last", "--format", "json"]).stdout)
    assert doc["reproduce"]["commands"][0] == "unbottle eval tiny-llama --eval-tokens 512 --threads 1 --quiet"
    assert doc["reproduce"]["reconstructed"] is False
    assert doc["headline"][0]["label"] == "perplexity" and doc["headline"][0]["ci"]
