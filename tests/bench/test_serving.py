"""The serve scenario: Poisson arrivals, continuous batching that gives every request the tokens it
gets alone, per-request latencies, goodput against objectives, and the knee."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from typer.testing import CliRunner

from unbottle.benchmarking.config import BenchConfig
from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.serving import check_servable, knee, make_requests, serve, serve_metrics
from unbottle.benchmarking.timing import CpuTimer
from unbottle.cli.main import app
from unbottle.core.errors import BenchError, ConfigError
from unbottle.models import load


def _alone(model, req) -> list[int]:
    record: list = []
    decode_once(model, torch.tensor([req.prompt]), req.new_tokens, CpuTimer(), record=record)
    return [int(t) for t in torch.cat(record, dim=1)[0]]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_continuous_batching_gives_every_request_its_own_greedy_tokens(name):
    loaded = load(name)
    torch.manual_seed(0)
    # a burst: requests of different lengths join a running batch and leave it as they finish
    requests = make_requests(loaded, 500.0, 20, 16, 12, seed=3)
    serve(loaded.model, requests, max_batch=4)
    assert len({len(r.prompt) for r in requests}) > 3 and len({r.new_tokens for r in requests}) > 3
    for r in requests:
        assert r.tokens == _alone(loaded.model, r)
        assert len(r.tokens) == r.new_tokens and r.arrival <= r.first_token_at <= r.done_at


def test_arrivals_are_poisson_at_the_rate_and_lengths_around_the_configured(tiny_llama):
    requests = make_requests(tiny_llama, 4.0, 2000, 32, 20, seed=0)
    gaps = [b.arrival - a.arrival for a, b in zip(requests, requests[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.08)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.1)  # exponential: sd = mean
    assert {len(r.prompt) for r in requests} == set(range(16, 49))
    assert {r.new_tokens for r in requests} == set(range(10, 31))
    again = make_requests(tiny_llama, 4.0, 5, 32, 20, seed=0)
    assert [r.arrival for r in again] == [r.arrival for r in requests[:5]]


def test_metrics_count_requests_against_the_objectives(tiny_llama):
    requests = make_requests(tiny_llama, 1000.0, 12, 8, 6, seed=1)
    serve(tiny_llama.model, requests, max_batch=3)
    loose, strict = serve_metrics(requests, 60.0, 60.0), serve_metrics(requests, 1e-9, 1e-9)
    assert len(loose["ttft"]) == len(loose["tpot"]) == len(loose["request_latency"]) == 12
    assert loose["goodput"] == loose["completed"] and strict["goodput"] == [0.0]
    assert loose["throughput"][0] == pytest.approx(
        loose["completed"][0] * sum(r.new_tokens for r in requests) / 12
    )
    assert all(lat >= t for lat, t in zip(loose["request_latency"], loose["ttft"], strict=True))


def test_the_knee_is_where_queues_build():
    def at(ttft: float, completed: float) -> dict:
        return {"ttft": [ttft] * 10, "completed": [completed]}

    assert knee({1.0: at(0.1, 1.0), 2.0: at(0.12, 2.0), 4.0: at(0.5, 3.9)}) == 4.0
    assert knee({1.0: at(0.1, 1.0), 2.0: at(0.1, 1.5)}) == 2.0  # fewer served than offered
    assert knee({1.0: at(0.1, 1.0), 2.0: at(0.15, 2.0)}) is None


def test_serve_settings_and_models_it_cannot_batch_are_refused():
    with pytest.raises(ConfigError, match="allowed: request rates per second > 0"):
        BenchConfig(scenarios=("serve",), rates=(1.0, 0.0))
    with pytest.raises(ConfigError, match="serve_requests"):
        BenchConfig(scenarios=("serve",), serve_requests=1)
    with pytest.raises(ConfigError, match="allowed: prefill, decode, generate, serve"):
        BenchConfig(scenarios=("serving",))
    with pytest.raises(BenchError, match="sliding-window layers"):
        check_servable(load("tiny-mistral").model)

    class OwnCache(torch.nn.Module):
        def new_cache(self, *args):
            return None

    with pytest.raises(BenchError, match="keeps its own cache"):
        check_servable(OwnCache())


def test_bench_serve_prints_the_latency_and_goodput_per_rate_and_the_knee():
    args = ["bench", "tiny-llama", "--scenarios", "serve", "--rates", "20,2000", "--serve-requests", "8",
            "--max-batch", "2", "--new-tokens", "6", "--threads", "1", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "serve 2,000/s: goodput, throughput" in result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert [s["rate"] for s in doc["headline"]["serve"]] == [20.0, 2000.0]
    assert any(n.startswith("serve: ") for n in doc["notes"])
    names = {m["name"] for m in doc["metrics"]}
    assert {"serve.ttft", "serve.tpot", "serve.goodput", "serve.throughput"} <= names
