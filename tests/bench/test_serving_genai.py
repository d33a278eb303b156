"""The serve scenario on a GenAI build: ONNX Runtime GenAI's continuous-batching engine gives every
request the greedy tokens it gets alone, stamps its latencies, and runs at most the engine's batch."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.serving import check_servable, make_requests, serve
from unbottle.benchmarking.serving_genai import runs_in_engine
from unbottle.benchmarking.timing import CpuTimer
from unbottle.passes import apply_
from unbottle.passes.genai import GenaiConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_genai") is None, reason="needs onnxruntime-genai"
)


@pytest.fixture(scope="module")
def fp32_build(tiny_llama, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNBOTTLE_CACHE", str(tmp_path_factory.mktemp("genai-cache")))
        built, _ = apply_(tiny_llama, [GenaiConfig(precision="fp32")])
    return built


def _alone(model, req) -> list[int]:
    record: list = []
    decode_once(model, torch.tensor([req.prompt]), req.new_tokens, CpuTimer(), record=record)
    return [int(t) for t in torch.cat(record, dim=1)[0]]


def test_genais_engine_gives_every_request_its_own_greedy_tokens(fp32_build):
    model = fp32_build.model
    assert runs_in_engine(model)
    check_servable(model)  # not refused: the engine batches it
    # a burst of requests of different lengths, more than the engine runs at once: they queue and join
    requests = make_requests(fp32_build, 500.0, 12, 16, 10, seed=5)
    serve(model, requests, max_batch=8)
    assert len({len(r.prompt) for r in requests}) > 3 and len({r.new_tokens for r in requests}) > 3
    for r in requests:
        assert len(r.tokens) == r.new_tokens, "an end-of-text token must not cut a request short"
        assert r.tokens == _alone(model, r)
        assert r.arrival <= r.first_token_at <= r.done_at


def test_a_lower_max_batch_serves_requests_one_after_another(fp32_build):
    requests = make_requests(fp32_build, 1000.0, 4, 8, 6, seed=1)
    serve(fp32_build.model, requests, max_batch=1)
    spans = sorted((r.first_token_at, r.done_at) for r in requests)
    assert all(prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:], strict=False))
