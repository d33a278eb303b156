"""The causal-LM scenarios: prefill, decode with a KV cache, and end-to-end generate; and the
encoders' one: ``encode`` (a batch of sequences through the encoder stack).

Each scenario function runs one repeat and returns its raw samples in seconds or tokens/s.
Decoding is a plain greedy loop over the model's forward with a ``DynamicCache`` so each token's
latency is seen on its own; ``generate`` calls ``model.generate`` as a user would.
"""

from __future__ import annotations

from typing import Any

import torch

from unbottle.benchmarking.runner import Samples
from unbottle.benchmarking.timing import CpuTimer, CudaTimer
from unbottle.runtime.caches import cache_keyword, forward_kwargs, new_cache


def prefill_once(model: Any, prompt: Any, timer: CpuTimer | CudaTimer) -> Samples:
    """One forward over the whole prompt ``(B, T)``, no cache kept."""
    with torch.inference_mode():
        timer.start()
        model(input_ids=prompt, use_cache=False, **forward_kwargs(model))
        latency = timer.stop()
    tokens = prompt.numel()
    return {"latency": [latency], "tokens_per_s": [tokens / latency]}


def encode_once(model: Any, ids: Any, timer: CpuTimer | CudaTimer) -> Samples:
    """One forward of ``ids`` ``(B, T)`` through the encoder stack, as sentence embeddings and
    classifiers run it: a masked-LM's vocabulary head (``base_model`` skips it) is not run."""
    encoder = getattr(model, "base_model", model)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        timer.start()
        encoder(input_ids=ids, attention_mask=mask)
        latency = timer.stop()
    rates = {"sequences_per_s": [ids.shape[0] / latency], "tokens_per_s": [ids.numel() / latency]}
    return {"latency": [latency], **rates}


def decode_once(
    model: Any, prompt: Any, new_tokens: int, timer: CpuTimer | CudaTimer, record: list[Any] | None = None
) -> Samples:
    """Greedy-decode ``new_tokens`` after ``prompt`` ``(B, T)``, timing every step.

    Returns ``ttft`` (prefill + first token), ``token_latency`` (each later step),
    ``tokens_per_s`` (batch tokens per second over the decode steps of this repeat) and
    ``request_latency`` (the whole request: prompt in, ``new_tokens`` out). When
    ``record`` is a list, each step's ``(B, 1)`` token ids are appended to it (for checks).
    """
    kw = forward_kwargs(model)
    batch = prompt.shape[0]
    cache_kw = cache_keyword(model)
    steps: list[float] = []
    with torch.inference_mode():
        cache = new_cache(model, prompt.shape[1] + new_tokens, batch)
        timer.start()
        kw[cache_kw] = cache  # the cache object is updated in place by every forward
        out = model(input_ids=prompt, use_cache=True, **kw)
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
        ttft = timer.stop()
        if record is not None:
            record.append(token)
        for _ in range(new_tokens - 1):
            timer.start()
            out = model(input_ids=token, use_cache=True, **kw)
            token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
            steps.append(timer.stop())
            if record is not None:
                record.append(token)
    return {
        "ttft": [ttft],
        "token_latency": steps,
        "tokens_per_s": [batch * len(steps) / sum(steps)],
        "request_latency": [ttft + sum(steps)],
    }


def generate_once(model: Any, prompt: Any, new_tokens: int, timer: CpuTimer | CudaTimer) -> Samples:
    """``model.generate`` from ``prompt`` to exactly ``new_tokens`` greedy tokens."""
    mask = torch.ones_like(prompt)
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = model.generation_config.eos_token_id
    with torch.inference_mode():
        timer.start()
        out = model.generate(
            input_ids=prompt,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        latency = timer.stop()
    made = out.shape[1] - prompt.shape[1]
    return {"latency": [latency], "tokens_per_s": [prompt.shape[0] * made / latency]}
