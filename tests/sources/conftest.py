"""Shared fixtures for the model-source tests: a private cache and store, and one tiny-llama to compare with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from unbottle.sources import Loaded, load

# Token ids every logits comparison feeds the model: BOS, then a few byte tokens, then a high id.
PROBE_IDS = [[1, 44, 105, 108, 108, 111, 300, 511]]


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache and store at tmp_path, so no test writes to the user's folders."""
    monkeypatch.setenv("UNBOTTLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UNBOTTLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_llama() -> Loaded:
    """The seeded tiny-llama every saved/converted copy is checked against. Do not modify it."""
    return load("tiny-llama")


@pytest.fixture(scope="session")
def logits_of() -> Callable[[torch.nn.Module], torch.Tensor]:
    """Logits of a model on PROBE_IDS: (1, T, vocab)."""

    def run(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model(torch.tensor(PROBE_IDS)).logits

    return run


@pytest.fixture(scope="session")
def hf_folder(tiny_llama: Loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama and its byte tokenizer written by save_pretrained."""
    folder = tmp_path_factory.mktemp("hf") / "tiny-llama"
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return folder
