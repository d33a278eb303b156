"""Settings are named by their config field from Python and by their flag from the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.comparison.ab import ABConfig
from unbottle.core.errors import ConfigError
from unbottle.core.naming import SPEAKS_FLAGS, given, opt, turn_on


def _refusal(**settings) -> str:
    with pytest.raises(ConfigError) as caught:
        ABConfig(**settings)
    return str(caught.value)


def test_opt_and_given_name_the_field_from_python_and_the_flag_from_the_cli():
    assert (opt("seq_len"), given("seq_len", 0)) == ("seq_len", "seq_len=0")
    assert given("objective", "speed", quote=True) == "objective='speed'"
    assert (given("compile", True), turn_on("resume")) == ("compile=True", "set resume=True")
    token = SPEAKS_FLAGS.set(True)
    try:
        assert (opt("seq_len"), given("seq_len", 0)) == ("--seq-len", "--seq-len 0")
        assert opt("time_budget_s", flag="--time-budget") == "--time-budget"
        assert given("min_time_s", -1, "--min-time") == "--min-time -1"
        assert given("prompt_length", 0, "--workload prompt=") == "--workload prompt=0"
        assert (given("compile", True), turn_on("resume")) == ("--compile", "pass --resume")
    finally:
        SPEAKS_FLAGS.reset(token)


def test_the_same_bad_setting_reads_as_a_field_from_python_and_as_a_flag_from_the_cli():
    assert _refusal(rounds=2).startswith("rounds=2 given; allowed: an integer >= 3")

    result = CliRunner().invoke(app, ["ab", "tiny-llama", "tiny-llama", "--rounds", "2", "--quiet"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "--rounds 2 given; allowed: an integer >= 3" in said
    assert "rounds=2" not in said

    # the command is over: Python callers in the same process get field names again
    assert not SPEAKS_FLAGS.get()
    assert _refusal(rounds=2).startswith("rounds=2 given")
    assert _refusal(batch_size=0).startswith("batch_size=0 given")
