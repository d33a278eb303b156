"""Fixtures for the model-source tests: logits probes and a saved tiny-llama folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from unbottle.sources import Loaded

# Token ids every logits comparison feeds the model: BOS, then a few byte tokens, then a high id.
PROBE_IDS = [[1, 44, 105, 108, 108, 111, 300, 511]]


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
