"""Fixtures for every test: a private store and model cache, and one shared tiny-llama."""

from __future__ import annotations

from pathlib import Path

import pytest

from unbottle.models import load
from unbottle.sources import Loaded


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache and store at tmp_path, so no test writes to the user's folders."""
    monkeypatch.setenv("UNBOTTLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UNBOTTLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_llama() -> Loaded:
    """The seeded tiny-llama, loaded once per session. Tests must not modify it."""
    return load("tiny-llama")
