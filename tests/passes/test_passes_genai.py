"""The genai pass and GenaiCausalLM: the GenAI model builder's graph behind the causal-LM interface.

tiny-llama is built once per precision (the builder runs in a subprocess, a few seconds each) and
every test compares numbers with the torch model it came from: the fp32 build must give the same
logits and the same greedy tokens through both of its paths (GenAI's own loop and a plain ORT
session), and a saved folder must run in ONNX Runtime GenAI without unbottle.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from speculation_checks import reference_table
from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.errors import ConfigError, PassError
from unbottle.evaluation import perplexity
from unbottle.passes import apply_, parse_pass
from unbottle.passes.genai import GenaiConfig
from unbottle.runtime.genai_model import GenaiCache, GenaiCausalLM
from unbottle.sources import Loaded

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_genai") is None, reason="needs onnxruntime-genai"
)

TEXT = "It was a truth universally acknowledged, that a single man in possession of a good fortune. " * 12


def sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum()))


@pytest.fixture(scope="module")
def builds(tiny_llama: Loaded, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Loaded, list]]:
    """``{"fp32" | "int8" | "int4": (loaded GenAI model, pass reports)}``, built once."""
    cache = tmp_path_factory.mktemp("genai-cache")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(cache))
        for precision in ("fp32", "int8", "int4"):
            out[precision] = apply_(tiny_llama, [GenaiConfig(precision=precision)])
    return out


@pytest.fixture(scope="module")
def fp32(builds) -> Loaded:
    return builds["fp32"][0]


def test_genai_fp32_logits_equal_torch_for_prefill_and_cached_steps(tiny_llama, fp32):
    prompt, steps = torch.tensor([[5, 6, 7, 8, 9, 10]]), torch.tensor([[11, 12, 13]])
    for make_cache in (lambda m: DynamicCache(config=m.config), lambda m: m.new_cache(16)):
        got = []
        caches = (DynamicCache(config=tiny_llama.model.config), make_cache(fp32.model))
        with torch.inference_mode():
            for chunk in (prompt, *steps.split(1, dim=1)):
                ref = tiny_llama.model(input_ids=chunk, cache=caches[0], use_cache=True).logits
                out = fp32.model(input_ids=chunk, cache=caches[1], use_cache=True).logits
                got.append(float((ref - out).abs().max() / ref.abs().max()))
        assert max(got) < 1e-4, (type(caches[1]).__name__, got)


def test_genai_cache_is_the_runtime_own_and_counts_positions(fp32):
    cache = fp32.model.new_cache(20)
    assert isinstance(cache, GenaiCache)
    fp32.model(input_ids=torch.tensor([[5, 6, 7, 8]]), cache=cache)
    fp32.model(input_ids=torch.tensor([[9]]), cache=cache)
    assert cache.get_seq_length() == 5


def test_genai_generate_equals_torch_greedy_and_refuses_left_padding(tiny_llama, fp32):
    prompt = torch.tensor([[5, 6, 7, 8, 9], [20, 21, 22, 23, 24]])
    kw = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert torch.equal(fp32.model.generate(prompt, **kw), tiny_llama.model.generate(prompt, **kw))
    padded, mask = torch.tensor([[3, 5, 6, 7, 8, 9]]), torch.tensor([[0, 1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="unpadded prompts only"):
        fp32.model.generate(padded, attention_mask=mask, pad_token_id=3, **kw)
    with pytest.raises(ValueError, match="pads on the left"):
        fp32.model(input_ids=padded, attention_mask=mask, use_cache=False)


def test_decode_scenario_runs_batches_in_genai_loop_with_torch_tokens(tiny_llama, fp32):
    prompt = torch.tensor([[5, 6, 7, 8], [40, 41, 42, 43]])
    ref_tokens, got_tokens = [], []
    decode_once(tiny_llama.model, prompt, 8, CpuTimer(), ref_tokens)
    samples = decode_once(fp32.model, prompt, 8, CpuTimer(), got_tokens)
    assert torch.equal(torch.cat(ref_tokens, 1), torch.cat(got_tokens, 1))
    assert len(samples["token_latency"]) == 7 and samples["tokens_per_s"][0] > 0


def test_genai_cache_is_genai_own_for_one_row_and_dynamic_for_a_batch(fp32):
    assert isinstance(fp32.model.new_cache(16, 1), GenaiCache)
    assert isinstance(fp32.model.new_cache(16, 2), DynamicCache)


def test_genai_perplexity_equals_torch(tiny_llama, fp32):
    kw = dict(text=TEXT, eval_tokens=512, window=128, stride=128)
    ref, got = perplexity(tiny_llama, **kw), perplexity(fp32, **kw)
    assert got.value == pytest.approx(ref.value, rel=1e-4)


@pytest.mark.parametrize(("precision", "floor_db", "bits"), [("int8", 25.0, 8), ("int4", 5.0, 4)])
def test_genai_quantized_builds_use_matmulnbits_within_an_sqnr_floor(
    tiny_llama, builds, precision, floor_db, bits
):
    loaded, reports = builds[precision]
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.inference_mode():
        ref = tiny_llama.model(input_ids=ids, use_cache=False).logits
        got = loaded.model(input_ids=ids, use_cache=False).logits
    assert sqnr_db(ref, got) > floor_db
    assert reports[0].touched and "MatMulNBits" in reports[0].touched[0]
    assert reports[0].bytes_after < builds["fp32"][1][0].bytes_after  # fewer bytes than the fp32 build
    assert any(f"bits': {bits}" in n or "MatMulNBits" in n for n in reports[0].notes)


def test_genai_saved_folder_runs_in_onnxruntime_genai_with_the_same_greedy_tokens(tiny_llama, fp32, tmp_path):
    import onnxruntime_genai as og

    from unbottle.models import load
    from unbottle.passes.recipe import apply_and_save

    apply_and_save(tiny_llama, [GenaiConfig(precision="fp32")], "tiny-llama", tmp_path / "out")
    folder = tmp_path / "out" / "onnx"
    assert (folder / "genai_config.json").exists()
    reloaded = load(str(tmp_path / "out"))
    assert isinstance(reloaded.model, GenaiCausalLM)
    prompt = [5, 6, 7, 8, 9]
    ours = reloaded.model.generate(torch.tensor([prompt]), max_new_tokens=10, min_new_tokens=10)
    model = og.Model(str(folder))  # no unbottle code between the folder and GenAI
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=15, min_length=15, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens([prompt])
    while not generator.is_done():
        generator.generate_next_token()
    assert list(generator.get_sequence(0)) == ours[0].tolist()


def test_genai_refuses_an_architecture_the_builder_does_not_know(tmp_path):
    import transformers

    from unbottle.sources.base import ModelInfo
    from unbottle.sources.tiny import byte_tokenizer

    config = transformers.GPT2Config(vocab_size=260, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    model = transformers.GPT2LMHeadModel(config).eval()
    loaded = Loaded(model, byte_tokenizer(), ModelInfo("gpt2", "tiny", "causal-lm", "gpt2"))
    with pytest.raises(
        PassError, match=r"gpt2 model: the GenAI model builder does not build GPT2LMHeadModel.*onnx pass"
    ):
        apply_(loaded, [GenaiConfig()])


def test_genai_config_validates_and_round_trips():
    config = parse_pass("genai:precision=int4,algo=k_quant,mixed=last_matmul:int8,block_size=64")
    assert config == GenaiConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert "matmul_mixed_precision=last_matmul:int8" in config.builder_options()
    for bad, match in [
        ("genai:precision=int2", "allowed: int4, int8, fp32"),
        ("genai:mixed=first:int8", "allowed: last_matmul"),
        ("genai:block_size=48", "allowed: 16, 32"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_pass(bad)


def test_genai_output_folder_that_is_not_a_build_is_refused(tiny_llama, tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(PassError, match="is not an unbottle build"):
        apply_(tiny_llama, [GenaiConfig(precision="fp32", output=str(tmp_path / "mine"))])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_one_token_step_padded_to_two_rows_computes_as_that_position_in_a_longer_pass(builds):
    """The property exact speculation rests on, for int8 activations: a one-token step run over two
    rows (its filler rolled back) gives bit for bit the logits of the same position inside a pass over
    several tokens; and the filler leaves no trace in the cache."""
    from unbottle.runtime.speculative import _rows

    model = builds["int4"][0].model
    assert model.min_rows == 2 and model.rows_independent
    prompt = torch.randint(4, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    batched, paired = model.new_cache(32), model.new_cache(32)
    for cache in (batched, paired):
        _rows(model, prompt, cache, 2)
    rows = _rows(model, prompt[:, :5], batched, 2)
    for j in range(5):
        step = _rows(model, prompt[:, j : j + 1], paired, 2)
        assert step.shape[0] == 1 and paired.get_seq_length() == 13 + j
        assert torch.equal(step[0], rows[j]), j


def test_speculative_decoding_in_genai_gives_its_reference_greedy_tokens_on_50_prompts(
    builds, tiny_llama, tmp_path
):
    from unbottle.runtime.speculative import check_speculative, reference_greedy, speculative_greedy

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path))
        float_activations = apply_(tiny_llama, [GenaiConfig(precision="int4", accuracy_level=1)])[0].model
    g = torch.Generator().manual_seed(1)
    for model in (builds["fp32"][0].model, float_activations, builds["int4"][0].model):
        check_speculative(model, "lookup")  # int8 activations (the int4 build) included
        accepted = guess_kept = 0
        for i in range(50):
            phrase = torch.randint(4, model.config.vocab_size, (1, 8), generator=g)
            prompt = phrase.repeat(1, 3) if i % 2 == 0 else torch.randint(4, 500, (1, 24), generator=g)
            reference = reference_greedy(model, prompt, 16)
            run = speculative_greedy(model, prompt, 16, CpuTimer())
            assert run["tokens"] == reference, i
            # the torch model as draft model: its own weights, so nearly every draft is kept
            drafted = speculative_greedy(model, prompt, 16, CpuTimer(), draft=tiny_llama.model)
            assert drafted["tokens"] == reference, i
            # the free second row filled with a follower table's guesses (of the reference: often right)
            table = reference_table(prompt, reference, model.config.vocab_size)
            tabled = speculative_greedy(model, prompt, 16, CpuTimer(), table=table)
            assert tabled["tokens"] == reference, i
            accepted += sum(run["accepted"]) + sum(drafted["accepted"])
            guess_kept += sum(tabled["guess_kept"])
        assert accepted > 0 and guess_kept > 0  # the rewind path ran, and guesses were kept
