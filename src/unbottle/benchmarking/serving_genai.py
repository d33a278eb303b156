"""The ``serve`` scenario on a GenAI build: ONNX Runtime GenAI's own continuous-batching engine.

A GenAI build keeps its keys and values in GenAI's buffers, so the torch loop of ``serving.serve``
(left-padded ``DynamicCache``) can't batch it. ``og.Engine`` does what that loop does, inside the
runtime: a request joins the running batch when it is submitted (``create_request`` and
``begin_turn``), each ``run`` decodes one token for every running request (prefilling the new ones),
and a request that has its tokens leaves. This module feeds it the same Poisson arrivals, greedy, with
exactly ``new_tokens`` per request (an end-of-text token does not stop it early, as in the torch
loop), and stamps each request's first token and end when ``run`` hands their events back.

The engine fixes how many requests run together (``configured_max_batch_size``, 4 for these builds in
onnxruntime-genai 0.18); ``max_batch`` can only lower it. Later arrivals wait in this loop's queue, as
in the torch loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from unbottle.core.errors import BenchError

if TYPE_CHECKING:
    from unbottle.benchmarking.serving import Request

EVENTS = 256  # event buffer capacity: one event per running request per step, with room


def runs_in_engine(model: Any) -> bool:
    """Whether ``model`` is a GenAI build, served by GenAI's engine."""
    return callable(getattr(model, "og_model", None))


def serve_genai(
    model: Any, requests: list[Request], max_batch: int, clock: Callable[[], float] = time.perf_counter
) -> list[Request]:
    """Serve ``requests`` on ``model`` (a ``GenaiCausalLM``) with GenAI's engine in real time; returns
    them with their tokens and times filled in (as ``serving.serve``)."""
    import onnxruntime_genai as og

    engine = og.Engine(model.og_model())
    limit = min(max_batch, int(engine.get_capabilities().configured_max_batch_size) or max_batch)
    events = engine.create_event_buffer(EVENTS)
    waiting = deque(sorted(requests, key=lambda r: r.arrival))
    running: dict[int, tuple[Any, Request]] = {}  # id(og request) → (og request, ours)
    start = clock()
    while waiting or running:
        now = clock() - start
        while waiting and waiting[0].arrival <= now and len(running) < limit:
            req = waiting.popleft()
            handle = engine.create_request()
            options = og.TurnOptions(handle)
            options.set_do_sample(False)
            options.set_max_generated_tokens(req.new_tokens)
            options.set_min_generated_tokens(req.new_tokens)
            handle.begin_turn(np.asarray(req.prompt, dtype=np.int32), options)
            running[id(handle)] = (handle, req)
        if not running:
            time.sleep(max(0.0, waiting[0].arrival - (clock() - start)))
            continue
        engine.run(events)
        _take(events, running, clock() - start)
    return requests


def _take(events: Any, running: dict[int, tuple[Any, Request]], now: float) -> None:
    """One step's events: tokens appended, first tokens and ends stamped, finished requests dropped."""
    import onnxruntime_genai as og

    for event in events:
        handle, req = running[id(event.request)]
        flags = int(event.flags)
        if flags & int(og.EngineEventFlags.FAILED):
            raise BenchError(f"ONNX Runtime GenAI's engine failed a request ({event.error_code})")
        if flags & int(og.EngineEventFlags.TOKEN):
            req.tokens.append(int(event.token))
            if req.first_token_at is None:
                req.first_token_at = now
        if event.finish_reason != og.FinishReason.NONE:
            req.done_at = now
            handle.close()
            del running[id(event.request)]
