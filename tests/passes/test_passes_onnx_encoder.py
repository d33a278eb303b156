"""The onnx pass on encoders: the encoder stack (and its head, where the checkpoint has one) in ONNX
Runtime, float or int8, behind the interface scenarios and evaluators call; saved and reloaded."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unbottle.benchmarking.scenarios import encode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.evaluation import EvalConfig, evaluate
from unbottle.models import load, resolve
from unbottle.passes import apply_, parse_pass
from unbottle.passes.recipe import apply_and_save
from unbottle.sources import Loaded


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("unbottle-cache")
        mp.setenv("UNBOTTLE_CACHE", str(path))
        yield path


def _padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, 500, (3, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    return ids, mask


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-bert-classifier"])
def test_the_float_graphs_give_the_torch_models_hidden_states_and_logits(name, cache_dir):
    base = load(name)
    built, [report] = apply_(base, [parse_pass("onnx")])
    model = built.model
    assert type(model).__name__ == "OrtEncoder" and model.graphs == ["encoder.onnx", "model.onnx"]
    assert any("verified on a padded" in n for n in report.notes)
    ids, mask = _padded()
    with torch.inference_mode():
        hidden = base.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = base.model(input_ids=ids, attention_mask=mask).logits
    got = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, hidden, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, logits, rtol=1e-4, atol=1e-4)
    assert encode_once(model, ids, CpuTimer())["sequences_per_s"][0] > 0


def test_int8_keeps_the_embeddings_and_a_saved_encoder_reloads_as_one(cache_dir, tmp_path):
    base = load("tiny-bert-classifier")
    recipe, built = apply_and_save(base, [parse_pass("onnx:quantize=int8-dynamic")], "tiny-bert-classifier",
                                   tmp_path / "out")  # fmt: skip
    notes = [n for r in recipe.reports for n in r["notes"]]
    assert recipe.onnx == "onnx" and any("MatMulInteger=" in n for n in notes), notes
    results = {r.metric: r for r in evaluate(built, EvalConfig(eval_tokens=512), base)}
    assert results["embedding_cosine"].value > 0.99 and results["label_agreement"].value >= 0.9
    source = resolve(str(tmp_path / "out"))
    assert source.probe_task() == "sequence-classification"
    saved = source.load()
    assert type(saved.model).__name__ == "OrtEncoder" and saved.info.task == "sequence-classification"
    ids, mask = _padded()
    torch.testing.assert_close(saved.model(ids, mask).logits, built.model(ids, mask).logits)


def test_an_encoder_without_its_head_is_exported_without_one(cache_dir):
    base = load("tiny-bert")
    headless = Loaded(base.model, base.tokenizer, dataclasses.replace(base.info, head=False))
    built, _ = apply_(headless, [parse_pass("onnx")])
    assert built.model.graphs == ["encoder.onnx"] and not built.model.has_head
    with pytest.raises(ValueError, match="exported without its head"):
        built.model(*_padded())
    results = evaluate(built, EvalConfig(eval_tokens=512), headless)
    assert [r.metric for r in results] == ["embedding_cosine"] and results[0].value > 0.9999


def test_exclude_names_an_encoders_modules_as_torch_does(cache_dir):
    """One layer left in float32 by its torch name, every other weight MatMul in int8, in both graphs."""
    import onnx

    base = load("tiny-bert-classifier")
    layer = "bert.encoder.layer.1.output.dense"
    built, [report] = apply_(base, [parse_pass(f"onnx:quantize=int8-dynamic,exclude={layer}")])
    assert layer not in report.touched and "bert.encoder.layer.0.attention.self.query" in report.touched
    for name in ("encoder.onnx", "model.onnx"):
        graph = onnx.load(str(built.model.folder / name))
        weights = {i.name for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
        floats = [n for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
        assert len(floats) == 1, name  # the excluded layer's
        assert sum(n.op_type == "MatMulInteger" for n in graph.graph.node) >= 11, name
