"""``unbottle optimize`` writes its HTML report beside the saved model and prints where.

The search itself is replaced by a stand-in that records trials and returns a finished document, so
these tests check the command's report step, not the (minutes-long) search.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.store import Store

ARGS = ["optimize", "tiny-llama", "--time-budget", "60", "--quiet"]


class _Search:
    """Stands in for ``unbottle.optimizer.search.Search``: same constructor, a canned finished run."""

    saves = True
    make_doc = None  # set by the fixture: conftest's optimize_doc

    def __init__(self, config, store, output, overwrite, log=None, save_closest=False):
        self.store, self.output, self.key = store, output, "search-cli"

    def run(self):
        saved = str(self.output.resolve()) if self.saves else None
        doc = type(self).make_doc(self.store, self.key, saved)
        if saved:
            self.output.mkdir(parents=True)
            (self.output / "unbottle-recipe.json").write_text("{}")
        else:
            doc.update(winner=None, verification=None, rounds=None, verdict="nothing improved; nothing saved",
                       outcome="goal-missed", saved_as=None)  # fmt: skip
        return doc


@pytest.fixture
def fake_search(monkeypatch, make_optimize_doc):
    monkeypatch.setattr(_Search, "make_doc", staticmethod(make_optimize_doc))
    monkeypatch.setattr("unbottle.api.tuning.Search", _Search)
    return _Search


def test_optimize_writes_report_html_into_the_saved_models_folder(fake_search, tmp_path):
    out = tmp_path / "smol-fast"
    result = CliRunner().invoke(app, [*ARGS, "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = out / "report.html"
    assert f"report: {report}" in result.output
    page = report.read_text()
    assert "unbottle optimize report" in page and 'data-chart="pareto"' in page
    assert Store().get_run("last").status == "complete"


def test_optimize_without_a_saved_model_writes_the_report_beside_the_output_folder(
    fake_search, tmp_path, monkeypatch
):
    monkeypatch.setattr(fake_search, "saves", False)
    out = tmp_path / "smol-fast"
    result = CliRunner().invoke(app, [*ARGS, "-o", str(out)])
    assert result.exit_code == 3, result.output  # nothing improved: the goal was missed
    assert Store().get_run("last").effective_status == "goal-missed"
    assert (tmp_path / "smol-fast.report.html").exists()
    assert not out.exists(), "no folder is created for the report alone (a re-run would refuse it)"


def test_no_report_writes_none(fake_search, tmp_path):
    out = tmp_path / "smol-fast"
    result = CliRunner().invoke(app, [*ARGS, "-o", str(out), "--no-report"])
    assert result.exit_code == 0, result.output
    assert not (out / "report.html").exists() and "report:" not in result.output
