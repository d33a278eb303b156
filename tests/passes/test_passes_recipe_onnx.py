"""A recipe ending in ONNX export saves the ONNX Runtime model itself and loads it back directly."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.models import load


def test_apply_onnx_saves_the_graph_and_every_verb_loads_it(tmp_path):
    out = tmp_path / "tiny-ort"
    result = CliRunner().invoke(
        app,
        ["apply", "tiny-llama", "--pass", "onnx:quantize=int8-block", "-o", str(out), "--quiet", "--json"],
    )
    assert result.exit_code == 0, result.output
    recipe = json.loads((out / "unbottle-recipe.json").read_text())
    assert recipe["onnx"] == "onnx" and (out / "onnx" / "model.onnx").is_file()
    restored = load(str(out))
    assert type(restored.model).__name__ == "OrtCausalLM"
    assert restored.tokenizer is not None and restored.info.source_kind == "recipe"
    probe = torch.tensor([[1, 44, 105, 108, 108, 111]])
    with torch.no_grad():
        ref = load("tiny-llama").model(probe).logits
    got = restored.model(input_ids=probe).logits
    sqnr = 10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum())
    assert sqnr > 30, f"int8-block ONNX logits SQNR {sqnr:.1f} dB"
    bench = CliRunner().invoke(
        app,
        [
            "bench",
            str(out),
            "--scenarios",
            "decode",
            "--batch-sizes",
            "1",
            "--new-tokens",
            "4",
            "--min-time",
            "0",
            "--min-repeats",
            "2",
            "--threads",
            "1",
            "--quiet",
        ],
    )
    assert bench.exit_code == 0, bench.output
