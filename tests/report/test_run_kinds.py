"""One registry of run kinds: every kind's document carries its result, and ``runs show`` prints its view.

Before the registry, train and distill runs were missing from ``runs show`` (no tables) and from their
JSON document (no result); now each stored kind, odd shapes included, documents and shows.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.reporting.run_kinds import RUN_KINDS

SHOWN = {  # run → (document key, a line its view prints)
    "bench": ("headline", "decode"),
    "eval": ("evals", "perplexity"),
    "ab": ("comparison", "decode.tokens_per_s"),
    "optimize": ("optimize", "verdict:"),
    "profile": ("profile", "roofline"),
    "train": ("train", "tokens/s (median step)"),
    "train-compare": ("train", "training strategies, interleaved"),
    "distill": ("distill", "held-out perplexity"),
}


def test_every_kind_the_verbs_record_is_registered():
    assert set(RUN_KINDS.names()) == {
        "bench",
        "eval",
        "ab",
        "compare",
        "optimize",
        "profile",
        "train",
        "distill",
        "apply",
    }


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_runs_show_prints_the_view_and_the_document_holds_the_result(runs, name):
    key, line = SHOWN[name]
    result = CliRunner().invoke(app, ["runs", "show", str(runs[name]), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output.strip().splitlines()[-1])
    assert doc[key], doc
    assert line in result.output


def test_an_unknown_result_shape_still_shows_and_documents(runs):
    result = CliRunner().invoke(app, ["runs", "show", str(runs["distill-odd"]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["distill"]["kl_final"] == 0.4
