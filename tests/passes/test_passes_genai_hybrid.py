"""genai:prefill=torch — the prompt in the float torch model, decoding in the GenAI graph.

With an fp32 build both engines compute the same function, so greedy decoding must give the float
model's tokens exactly: that checks the KV cache handed from torch to the graph (layout, rotary,
positions, sliding windows) and the buffers the graph writes in place step after step.
"""

from __future__ import annotations

import pytest
import torch

from speculation_checks import assert_lookup_exact
from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.data.prompts import make_prompts
from unbottle.models import load
from unbottle.passes import apply_
from unbottle.passes.genai import GenaiConfig

pytestmark = pytest.mark.skipif(
    GenaiConfig().missing() != [], reason="needs onnxruntime-genai and onnxruntime"
)
HYBRID = GenaiConfig(precision="fp32", prefill="torch")


def _tokens(loaded, prompt, new: int) -> list[list[int]]:
    """Each step's greedy token ids, one per row."""
    record: list = []
    decode_once(loaded.model, prompt, new, CpuTimer(), record)
    return [t.flatten().tolist() for t in record]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path_factory.mktemp("genai-cache")))
        yield


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])  # gemma3: a prompt past its window of 8
def test_torch_prefill_then_graph_decode_gives_the_float_models_greedy_tokens(name, cache_dir):
    base = load(name)
    hybrid, [report] = apply_(base, [HYBRID])
    assert type(hybrid.model).__name__ == "HybridCausalLM"
    assert any("prompts run in the float torch model" in n for n in report.notes)
    calls: list[int] = []
    hybrid.model.torch_model.register_forward_pre_hook(lambda _m, args, kw: calls.append(1), with_kwargs=True)
    prompt = make_prompts(base.tokenizer, base.model.config.vocab_size, 1, 20, 0)
    assert _tokens(hybrid, prompt, 24) == _tokens(base, prompt, 24)
    assert len(calls) == 1  # the prompt ran in torch once; the 23 later tokens in the graph


def test_speculation_on_the_hybrid_rewinds_its_buffers_and_gives_the_reference_tokens(tiny_llama, cache_dir):
    hybrid = apply_(tiny_llama, [GenaiConfig(precision="int4", prefill="torch")])[0].model
    accepted = assert_lookup_exact(hybrid, prompts=12, new_tokens=12, seed=2)
    assert accepted > 0  # rejected drafts were rewound and written over


def test_prefill_is_a_run_setting_the_build_is_shared(tiny_llama, cache_dir):
    _, [first] = apply_(tiny_llama, [GenaiConfig(precision="fp32")])
    hybrid, [second] = apply_(tiny_llama, [HYBRID])
    assert any(n.startswith("reused the build") for n in second.notes)
    assert second.bytes_after > first.bytes_after  # the float weights stay in memory beside the graph
    with pytest.raises(Exception, match="genai prefill='onnx' given; allowed: genai, torch"):
        GenaiConfig(prefill="onnx")


def test_batches_and_perplexity_windows_run_in_the_graph(tiny_llama, cache_dir):
    hybrid, _ = apply_(tiny_llama, [HYBRID])
    prompt = make_prompts(tiny_llama.tokenizer, tiny_llama.model.config.vocab_size, 2, 12, 0)
    assert _tokens(hybrid, prompt, 6) == _tokens(tiny_llama, prompt, 6)  # two rows: a DynamicCache
    ids = prompt[:1]
    with torch.inference_mode():
        ref = tiny_llama.model(input_ids=ids, use_cache=False).logits
        got = hybrid.model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_a_saved_hybrid_reloads_with_its_source_model_for_prompts(tiny_llama, cache_dir, tmp_path):
    from unbottle.passes.recipe import apply_and_save

    apply_and_save(tiny_llama, [HYBRID], "tiny-llama", tmp_path / "out")
    reloaded = load(str(tmp_path / "out"))
    assert type(reloaded.model).__name__ == "HybridCausalLM"
    assert any("prompts run in tiny-llama" in n for n in reloaded.info.notes)
    prompt = make_prompts(tiny_llama.tokenizer, tiny_llama.model.config.vocab_size, 1, 10, 1)
    assert _tokens(reloaded, prompt, 12) == _tokens(tiny_llama, prompt, 12)
    out = reloaded.model.generate(prompt, max_new_tokens=5, min_new_tokens=5)
    assert out.shape == (1, 15)
