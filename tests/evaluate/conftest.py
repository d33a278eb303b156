"""Fixtures for the evaluator tests: tiny-llama wrapped so its logits are known or steered."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from unbottle.sources import Loaded


class LogitsShift(torch.nn.Module):
    """A causal LM whose logits are ``scale * inner logits + bias`` (bias: (V,))."""

    def __init__(self, inner: torch.nn.Module, bias: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.inner, self.config, self.scale = inner, inner.config, scale
        self.register_buffer("bias", bias)

    def forward(self, **kwargs: Any) -> Any:
        out = self.inner(**kwargs)
        out.logits = self.scale * out.logits + self.bias
        return out


def wrap(loaded: Loaded, model: torch.nn.Module, spec: str) -> Loaded:
    """The same tokenizer and info as ``loaded``, with another model and spec."""
    return Loaded(model=model, tokenizer=loaded.tokenizer, info=dataclasses.replace(loaded.info, spec=spec))


@pytest.fixture(scope="session")
def uniform_llama(tiny_llama: Loaded) -> Loaded:
    """tiny-llama with every logit zero: each of the 512 tokens has probability 1/512."""
    return wrap(tiny_llama, LogitsShift(tiny_llama.model, torch.zeros(512), scale=0.0), "uniform-llama")


@pytest.fixture(scope="session")
def biased_llama(tiny_llama: Loaded) -> Callable[[dict[str, float]], Loaded]:
    """tiny-llama with its logits raised by ``{character: bias}`` for single-byte tokens."""

    def make(biases: dict[str, float]) -> Loaded:
        bias = torch.zeros(512)
        for ch, value in biases.items():
            bias[token_id(tiny_llama.tokenizer, ch)] = value
        return wrap(tiny_llama, LogitsShift(tiny_llama.model, bias), f"biased-llama{biases}")

    return make


def token_id(tokenizer: Any, ch: str) -> int:
    ids = tokenizer(ch, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (ch, ids)
    return ids[0]


@pytest.fixture
def write_task(tmp_path: Path) -> Callable[..., Path]:
    """Write a BIG-bench task file from examples (and optional top-level fields); return its path."""

    def write(examples: Any, name: str = "task.json", **fields: Any) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({**fields, "examples": examples}), encoding="utf-8")
        return path

    return write
