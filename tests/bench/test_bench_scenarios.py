"""The scenarios on a tiny model: correct decoding, complete raw samples, units, clear refusals."""

from __future__ import annotations

import pytest
import torch

from unbottle.benchmarking import BenchConfig, benchmark
from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.errors import BenchError
from unbottle.data.prompts import make_prompts

FAST = dict(warmup=0, min_repeats=2, min_time_s=0.0, new_tokens=6, threads=1)


def test_decode_loop_produces_the_same_tokens_as_greedy_generate(tiny_llama):
    model = tiny_llama.model
    prompt = make_prompts(tiny_llama.tokenizer, model.config.vocab_size, 2, 12, seed=3)  # (2, 12)
    record: list[torch.Tensor] = []
    decode_once(model, prompt, 8, CpuTimer(), record=record)
    ours = torch.cat(record, dim=1)  # (2, 8)
    with torch.inference_mode():
        ref = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            pad_token_id=3,
        )[:, 12:]
    torch.testing.assert_close(ours, ref, msg="KV-cache decode loop diverged from greedy generate")


def test_make_prompts_is_deterministic_and_uses_real_text(tiny_llama):
    a = make_prompts(tiny_llama.tokenizer, 512, 3, 40, seed=1)
    b = make_prompts(tiny_llama.tokenizer, 512, 3, 40, seed=1)
    assert a.shape == (3, 40) and torch.equal(a, b)
    text = tiny_llama.tokenizer.decode(a[0])
    assert sum(ch.isalpha() or ch.isspace() for ch in text) > 30, f"expected corpus text, got {text!r}"
    assert not torch.equal(a[0], a[1]), "batch rows should be different windows"


def test_benchmark_keeps_every_raw_sample_with_units(tiny_llama):
    config = BenchConfig(prompt_lengths=(8, 16), batch_sizes=(1, 2), **FAST)
    sunk = []
    result = benchmark(tiny_llama, config, sink=sunk.append)
    assert sunk == result.measurements, "each measurement goes to the sink as it is made"
    by = {m.label: m for m in result.measurements}
    lat = by["decode.token_latency[batch_size=2,new_tokens=6,prompt_length=32]"]
    assert lat.unit == "s" and not lat.higher_is_better
    assert len(lat.samples) == 2 * (6 - 1), "one latency per decode step per repeat"
    tps = by["decode.tokens_per_s[batch_size=2,new_tokens=6,prompt_length=32]"]
    assert tps.unit == "tokens/s" and tps.higher_is_better and len(tps.samples) == 2
    expected = 2 * 5 / sum(lat.samples[:5])
    assert tps.samples[0] == pytest.approx(expected), "tokens/s must derive from the step latencies"
    for n in (8, 16):
        prefill = by[f"prefill.latency[batch_size=1,prompt_length={n}]"]
        assert len(prefill.samples) == 2 and all(s > 0 for s in prefill.samples)
    assert any(m.name == "generate.tokens_per_s" for m in result.measurements)
    rss = [m for m in result.measurements if m.name == "memory.peak_rss"]
    assert len(rss) == 5 and all(50 < m.samples[0] < 100_000 for m in rss), "peak RSS in MiB"
    assert result.threads["torch_num_threads"] == 1


def test_benchmark_headline_reports_medians_and_ci(tiny_llama):
    config = BenchConfig(scenarios=("decode", "prefill"), prompt_lengths=(8,), batch_sizes=(1,), **FAST)
    head = benchmark(tiny_llama, config).headline()
    d = head["decode"][0]
    assert d["batch_size"] == 1
    lo, hi = d["tokens_per_s"]["ci95"]
    assert lo <= d["tokens_per_s"]["p50"] <= hi
    assert head["prefill"][0]["prompt_length"] == 8
    assert head["peak_rss_mib"] > 0


def test_benchmark_refuses_a_causal_scenario_on_a_masked_lm_with_a_clear_error():
    with pytest.raises(BenchError, match="masked-lm model.*need a causal-lm"):
        benchmark("tiny-bert", BenchConfig(scenarios=("prefill", "decode"), **FAST))


def test_benchmark_refuses_sequences_longer_than_the_model_takes(tiny_llama):
    with pytest.raises(BenchError, match="at most 4096 positions.*5000"):
        benchmark(tiny_llama, BenchConfig(prompt_lengths=(5000,), **FAST))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_benchmark_on_cuda_uses_event_timing_and_reports_device_memory():
    from unbottle.models import load

    loaded = load("tiny-llama")
    config = BenchConfig(device="cuda", prompt_lengths=(8,), batch_sizes=(1,), **FAST)
    result = benchmark(loaded, config)
    names = {m.name for m in result.measurements}
    assert "memory.cuda_max_allocated" in names
    assert all(s > 0 for m in result.measurements if m.unit == "s" for s in m.samples)
