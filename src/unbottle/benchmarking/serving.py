"""The ``serve`` scenario: a model under a stream of requests, as a service sees it.

Requests arrive as a Poisson process at a given rate (seeded), each with its own prompt and output
length drawn around the configured ones (uniform over ½× to 1½×). An in-process **continuous
batching** loop serves them, as vLLM's scheduler and MLPerf Inference's server scenario do: a request
that has arrived joins the running batch at the next step (its prompt prefilled alone, its keys and
values left-padded into the batch's cache, masked), every step decodes one token for every running
request, and a finished request leaves the batch at once. Up to ``max_batch`` run together; later
arrivals queue.

Per rate it reports, per request, the time to first token (queueing + prefill), the time per output
token after the first, and the whole latency; for the run, the output tokens per second and the
goodput: requests per second that met both latency objectives (``slo_ttft_s``, ``slo_tpot_s``).
Where the rate outgrows the host, queues build and time to first token explodes: ``knee`` names the
first rate where that happened.

Runs on eager torch models with a ``DynamicCache`` (full attention), and on GenAI builds through
ONNX Runtime GenAI's own continuous-batching engine (``serving_genai``); others are refused before
any work.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from unbottle.benchmarking.serving_genai import runs_in_engine, serve_genai
from unbottle.core.errors import BenchError
from unbottle.data.prompts import make_prompts
from unbottle.runtime.caches import STATIC_CACHE_ATTR, cache_keyword


@dataclasses.dataclass
class Request:
    """One request: what it asks, when it arrived, and when it was served (seconds from the start)."""

    arrival: float
    prompt: list[int]
    new_tokens: int
    tokens: list[int] = dataclasses.field(default_factory=list)
    first_token_at: float | None = None
    done_at: float | None = None

    @property
    def ttft(self) -> float:
        assert self.first_token_at is not None
        return self.first_token_at - self.arrival

    @property
    def tpot(self) -> float:
        """Seconds per output token after the first."""
        assert self.first_token_at is not None and self.done_at is not None
        return (self.done_at - self.first_token_at) / max(1, len(self.tokens) - 1)


def make_requests(
    loaded: Any, rate: float, count: int, prompt_length: int, new_tokens: int, seed: int
) -> list[Request]:
    """``count`` requests arriving at ``rate`` per second (Poisson), lengths drawn around the given."""
    gen = torch.Generator().manual_seed(seed)
    gaps = torch.empty(count).exponential_(rate, generator=gen).tolist()
    low, high = max(1, prompt_length // 2), prompt_length * 3 // 2
    plens = torch.randint(low, high + 1, (count,), generator=gen).tolist()
    news = torch.randint(max(2, new_tokens // 2), new_tokens * 3 // 2 + 1, (count,), generator=gen).tolist()
    rows = make_prompts(loaded.tokenizer, loaded.model.config.vocab_size, count, high, seed + 1)
    arrivals = torch.tensor(gaps).cumsum(0).tolist()
    return [
        Request(at, rows[i, :plen].tolist(), new)
        for i, (at, plen, new) in enumerate(zip(arrivals, plens, news, strict=True))
    ]


def check_servable(model: Any) -> None:
    """Refuse models the loop can't batch: their own caches (plain ONNX), a compiled static one, or
    sliding-window layers (their caches keep only the window, which left padding would shift). A
    GenAI build is served by GenAI's engine instead (``serving_genai``)."""
    from transformers import DynamicCache

    fix = "measure it with the decode scenario"
    if runs_in_engine(model):
        return  # GenAI's own continuous-batching engine serves it (``serving_genai``)
    if callable(getattr(model, "new_cache", None)) or getattr(model, STATIC_CACHE_ATTR, None) is not None:
        raise BenchError(
            f"the serve scenario batches requests in a torch DynamicCache; this model "
            f"({type(model).__name__}) keeps its own cache: {fix}"
        )
    if any(DynamicCache(config=model.config).is_sliding):
        raise BenchError(
            "the serve scenario left-pads requests into one full-attention cache; this model has "
            f"sliding-window layers, whose caches keep only the window: {fix}"
        )


class _Batch:
    """The running requests' keys and values in one left-padded cache, with its attention mask."""

    def __init__(self, model: Any) -> None:
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.rows: list[Request] = []
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.kw = cache_keyword(model)

    def join(self, req: Request, cache: Any) -> None:
        """Add a prefilled request's cache (batch 1) as a new row, left-padding whichever is shorter."""
        length, own = self.mask.shape[1], cache.layers[0].keys.shape[2]
        width = max(length, own)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            for attr in ("keys", "values"):
                new = _left_pad(getattr(theirs, attr), width)
                if self.rows:
                    new = torch.cat([_left_pad(getattr(mine, attr), width), new])
                setattr(mine, attr, new)
                mine.is_initialized = True
        row = torch.cat([torch.zeros(width - own, dtype=torch.long), torch.ones(own, dtype=torch.long)])
        self.mask = torch.cat([_left_pad_mask(self.mask, width), row[None]])
        self.rows.append(req)

    def step(self) -> list[int]:
        """One decode step for every row: the next token of each."""
        ids = torch.tensor([[r.tokens[-1]] for r in self.rows])
        self.mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=torch.long)], dim=1)
        positions = (self.mask.sum(dim=1, keepdim=True) - 1).long()
        logits = self.model(
            input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True,
            **{self.kw: self.cache},
        ).logits  # fmt: skip
        return logits[:, -1].argmax(-1).tolist()

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows; drop the left padding no row needs any more."""
        index = torch.tensor(rows, dtype=torch.long)
        self.mask = self.mask[index]
        self.rows = [self.rows[i] for i in rows]
        start = int((self.mask.cumsum(dim=1) == 0).sum(dim=1).min()) if rows else self.mask.shape[1]
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, 0, width - t.shape[2], 0))


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))


def serve(
    model: Any, requests: list[Request], max_batch: int, clock: Callable[[], float] = time.perf_counter
) -> list[Request]:
    """Serve ``requests`` (sorted by arrival) with continuous batching in real time; returns them
    with their tokens and times filled in."""
    from transformers import DynamicCache

    check_servable(model)
    if runs_in_engine(model):
        return serve_genai(model, requests, max_batch, clock)
    waiting = deque(sorted(requests, key=lambda r: r.arrival))
    batch = _Batch(model)
    start = clock()
    with torch.inference_mode():
        while waiting or batch.rows:
            now = clock() - start
            while waiting and waiting[0].arrival <= now and len(batch.rows) < max_batch:
                req = waiting.popleft()
                cache = DynamicCache(config=model.config)
                ids = torch.tensor([req.prompt])
                logits = model(input_ids=ids, use_cache=True, **{batch.kw: cache}).logits
                req.tokens.append(int(logits[0, -1].argmax()))
                req.first_token_at = clock() - start
                batch.join(req, cache)
            if not batch.rows:
                time.sleep(max(0.0, waiting[0].arrival - (clock() - start)))
                continue
            _finish(batch, clock() - start)
            if batch.rows:
                for req, token in zip(batch.rows, batch.step(), strict=True):
                    req.tokens.append(token)
                _finish(batch, clock() - start)
    return requests


def _finish(batch: _Batch, now: float) -> None:
    """Requests with all their tokens leave the batch."""
    going = [i for i, r in enumerate(batch.rows) if len(r.tokens) >= r.new_tokens]
    if going:
        for i in going:
            batch.rows[i].done_at = now
        batch.keep([i for i in range(len(batch.rows)) if i not in going])


def serve_metrics(requests: list[Request], slo_ttft_s: float, slo_tpot_s: float) -> dict[str, list[float]]:
    """Per-request ``ttft``, ``tpot``, ``request_latency``; run-wide ``throughput`` (output tokens/s),
    ``goodput`` (requests/s meeting both objectives) and ``completed`` (requests/s)."""
    span = max(r.done_at for r in requests if r.done_at is not None) - min(r.arrival for r in requests)
    good = [r for r in requests if r.ttft <= slo_ttft_s and r.tpot <= slo_tpot_s]
    return {
        "ttft": [r.ttft for r in requests],
        "tpot": [r.tpot for r in requests],
        "request_latency": [r.done_at - r.arrival for r in requests if r.done_at is not None],
        "throughput": [sum(len(r.tokens) for r in requests) / span],
        "goodput": [len(good) / span],
        "completed": [len(requests) / span],
    }


def serve_points(loaded: Any, model: Any, config: Any, before: Callable[[float], None] | None = None) -> Any:
    """Yield ``(params, samples)`` per rate of ``config`` (a ``BenchConfig``), after a short warm-up
    serve when ``config.warmup``; each rate's requests are seeded by the rate's position. ``before``
    is called with each rate as it starts."""
    shape = (config.decode_prompt_length, config.new_tokens)
    if config.warmup:
        serve(model, make_requests(loaded, 1e6, 2, *shape, config.seed), config.max_batch)
    for i, rate in enumerate(config.rates):
        requests = make_requests(loaded, rate, config.serve_requests, *shape, config.seed + 1000 * i)
        if before is not None:
            before(rate)
        serve(model, requests, config.max_batch)
        params = {
            "rate": rate, "requests": config.serve_requests, "max_batch": config.max_batch,
            "prompt_length": shape[0], "new_tokens": shape[1],
        }  # fmt: skip
        yield params, serve_metrics(requests, config.slo_ttft_s, config.slo_tpot_s)


def knee(by_rate: dict[float, dict[str, list[float]]], factor: float = 2.0) -> float | None:
    """The first rate whose p90 time to first token is over ``factor``× the lowest rate's, or whose
    completed requests/s fell below 90% of the offered rate: where queues started to build."""
    rates = sorted(by_rate)
    base = _p90(by_rate[rates[0]]["ttft"])
    for rate in rates:
        m = by_rate[rate]
        if _p90(m["ttft"]) > factor * base or m["completed"][0] < 0.9 * rate:
            return rate
    return None


def _p90(values: list[float]) -> float:
    """The p90 the headline shows (``stats.summarize``'s percentile)."""
    return float(np.percentile(values, 90))
