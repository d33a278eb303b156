"""The package's layers and its acyclic modules, as ``pyproject.toml``'s import-linter contracts state them.

A change that makes a lower layer import a higher one (``passes`` importing ``benchmarking``, say) or
closes an import cycle between modules of one package fails here, with import-linter's explanation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_imports_flow_down_the_layers_and_never_circle(monkeypatch, capsys):
    importlinter = pytest.importorskip("importlinter.cli", reason="import-linter is a dev dependency")
    monkeypatch.chdir(ROOT)
    code = importlinter.lint_imports(
        config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True
    )
    assert code == importlinter.EXIT_STATUS_SUCCESS, capsys.readouterr().out
