"""``unbottle.benchmark``: how fast a causal LM runs on this machine, as raw samples with units.

Each scenario point (a prompt length, a batch size) is warmed up, repeated until both a minimum
count and a minimum time are reached, wrapped in a resource tracker, and handed to ``sink`` as
soon as it finishes, so a store can persist it before the next point starts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

from unbottle.benchmarking.config import ENCODER_SCENARIOS, SCENARIOS, BenchConfig, check_threads
from unbottle.benchmarking.headline import headline
from unbottle.benchmarking.runner import ProgressFn, repeat
from unbottle.benchmarking.scenarios import decode_once, encode_once, generate_once, prefill_once
from unbottle.benchmarking.serving import knee, serve_points
from unbottle.benchmarking.timing import make_timer
from unbottle.benchmarking.tracker import ResourceTracker
from unbottle.core.env import physical_cores, thread_settings
from unbottle.core.errors import BenchError
from unbottle.core.measurement import Measurement
from unbottle.core.naming import given, opt
from unbottle.data.prompts import make_prompts
from unbottle.models import load
from unbottle.runtime.speculative import (
    check_speculative,
    corpus_followers,
    parse_speculative,
    speculative_once,
)
from unbottle.sources import Loaded

__all__ = [
    "SCENARIOS",
    "BenchConfig",
    "BenchResult",
    "apply_threads",
    "benchmark",
    "check_positions",
    "headline",
]

Sink = Callable[[Measurement], None]

# metric suffix → (unit, higher_is_better)
_UNITS = {
    "latency": ("s", False),
    "token_latency": ("s", False),
    "ttft": ("s", False),
    "request_latency": ("s", False),
    "tokens_per_s": ("tokens/s", True),
    "acceptance": ("fraction", True),  # speculative decoding: draft tokens kept / offered
    "tokens_per_step": ("tokens", True),  # speculative decoding: tokens per forward pass
    "tpot": ("s", False),  # serve: time per output token after the first, per request
    "throughput": ("tokens/s", True),  # serve: output tokens per second over a rate's run
    "goodput": ("requests/s", True),  # serve: requests per second that met both latency objectives
    "completed": ("requests/s", True),  # serve: requests per second served
    "sequences_per_s": ("sequences/s", True),  # encode: sequences per second
}


@dataclasses.dataclass
class BenchResult:
    """What ``benchmark`` measured: the model, the settings in force and every measurement."""

    model: dict[str, Any]
    config: BenchConfig
    threads: dict[str, Any]
    measurements: list[Measurement]
    notes: list[str]

    def headline(self) -> dict[str, Any]:
        return headline(self.measurements)


def apply_threads(threads: int | None) -> dict[str, Any]:
    """Set torch's intra-op threads (default: physical cores); return the settings in force."""
    n = threads if threads is not None else physical_cores()
    check_threads(n)
    torch.set_num_threads(n)
    return thread_settings()


def benchmark(
    model: Any,
    config: BenchConfig | None = None,
    sink: Sink | None = None,
    progress: ProgressFn | None = None,
) -> BenchResult:
    """Run the configured scenarios on a causal LM.

    Args:
        model: a model spec string or an ``unbottle.sources.Loaded``.
        config: what to run; defaults to ``BenchConfig()``.
        sink: called with each measurement as soon as it is complete (e.g. a store writer).
        progress: called as ``progress(label, repeats_done, elapsed_s)`` after every repeat.

    Raises:
        BenchError: the model cannot run these scenarios (e.g. it is not a causal LM).
    """
    config = config or BenchConfig()
    threads = apply_threads(config.threads)
    loaded = model if isinstance(model, Loaded) else load(model)
    config = _scenarios_for(loaded, config)
    _check_context(loaded, config)
    draft = load_draft(loaded, config.speculative)
    model_ = _to_device(loaded.model, config.device)
    draft = None if draft is None else _to_device(draft, config.device)
    out: list[Measurement] = []

    def emit(ms: list[Measurement]) -> None:
        for m in ms:
            out.append(m)
            if sink is not None:
                sink(m)

    notes = list(loaded.info.notes)
    for scenario, params, fn in _points(model_, loaded, config, draft):
        tracker = ResourceTracker(config.device)
        with tracker:
            samples = repeat(
                fn, config.warmup, config.min_repeats, config.min_time_s, _label(scenario, params), progress
            )
        emit(_to_measurements(scenario, params, samples) + tracker.measurements(scenario, params))
        if tracker.peak_rss_method != "hwm":
            notes.append("peak RSS is the max of 50 ms samples: /proc/self/clear_refs unavailable")
    if "serve" in config.scenarios:
        notes += _serve(loaded, model_, config, emit, progress)
    return BenchResult(loaded.info.to_dict(), config, threads, out, sorted(set(notes), key=notes.index))


def load_draft(loaded: Loaded, speculative: str | None) -> Any:
    """The draft model of ``draft=MODEL`` (None for ``lookup`` or no speculation), loaded and checked
    with the model before any work."""
    name = None if speculative is None else parse_speculative(speculative)
    draft = None if name is None else load(name).model
    check_speculative(loaded.model, speculative, draft)
    return draft


def _points(model: Any, loaded: Any, config: BenchConfig, draft: Any = None):
    """Yield (scenario, params, one-repeat function) for every configured point, in order."""
    timer = make_timer(config.device)
    vocab = model.config.vocab_size
    tok = loaded.tokenizer

    def prompt(batch: int, length: int) -> Any:
        return make_prompts(tok, vocab, batch, length, config.seed).to(config.device)

    if "prefill" in config.scenarios:
        for n in config.prompt_lengths:
            p = prompt(1, n)
            yield "prefill", {"batch_size": 1, "prompt_length": n}, lambda p=p: prefill_once(model, p, timer)
    k, plen = config.new_tokens, config.decode_prompt_length
    table = corpus_followers(tok, vocab) if config.speculative else None
    if "decode" in config.scenarios:
        for b in config.batch_sizes:
            p = prompt(b, plen)
            params = {"batch_size": b, "prompt_length": plen, "new_tokens": k}
            if config.speculative:
                params["speculative"] = config.speculative
                yield "decode", params, lambda p=p: speculative_once(model, p, k, timer, draft, table)
            else:
                yield "decode", params, lambda p=p: decode_once(model, p, k, timer)
    if "encode" in config.scenarios:
        for n in config.prompt_lengths:
            for b in config.batch_sizes:
                p, params = prompt(b, n), {"batch_size": b, "sequence_length": n}
                yield "encode", params, lambda p=p: encode_once(model, p, timer)
    if "generate" in config.scenarios:
        b = config.batch_sizes[0]
        p = prompt(b, plen)
        params = {"batch_size": b, "prompt_length": plen, "new_tokens": k}
        yield "generate", params, lambda p=p: generate_once(model, p, k, timer)


def _serve(loaded: Any, model: Any, config: BenchConfig, emit: Callable, progress: Any) -> list[str]:
    """The serve scenario's measurements per rate, and a note naming the knee."""
    by_rate = {}
    report = progress or (lambda *_: None)
    started = [0.0]

    def before(rate: float) -> None:
        started[0] = time.perf_counter()
        report(f"serve @ {rate:g}/s", 0, 0.0)

    for params, samples in serve_points(loaded, model, config, before):
        emit(_to_measurements("serve", params, samples))
        by_rate[params["rate"]] = samples
        report(f"serve @ {params['rate']:g}/s", 1, time.perf_counter() - started[0])
    at = knee(by_rate)
    if at is None:
        return [f"serve: no knee up to {max(by_rate):g} requests/s (p90 time to first token within 2x)"]
    return [f"serve: knee at {at:g} requests/s (p90 time to first token over 2x the lowest rate's, or "
            "fewer requests served than offered)"]  # fmt: skip


def _scenarios_for(loaded: Loaded, config: BenchConfig) -> BenchConfig:
    """``encode`` for an encoder (its default), the others for a causal LM; a mismatch is refused."""
    info = loaded.info
    if info.task != "causal-lm" and config.scenarios == SCENARIOS:
        return dataclasses.replace(config, scenarios=ENCODER_SCENARIOS)
    wrong = [s for s in config.scenarios if (s in ENCODER_SCENARIOS) != (info.task != "causal-lm")]
    if wrong:
        needs = "a causal-lm" if info.task != "causal-lm" else "an encoder (masked-lm)"
        fits = "encode" if info.task != "causal-lm" else "prefill, decode, generate, serve"
        raise BenchError(
            f"{info.spec!r} is a {info.task} model ({info.architecture}); the bench scenario(s) "
            f"{', '.join(wrong)} need {needs} model; give {opt('scenarios')} {fits}"
        )
    return config


def _to_measurements(
    scenario: str, params: dict[str, Any], samples: dict[str, list[float]]
) -> list[Measurement]:
    out = []
    for key, values in samples.items():
        unit, higher = _UNITS[key]
        out.append(Measurement(f"{scenario}.{key}", unit, values, higher, scenario, dict(params)))
    return out


def _check_context(loaded: Any, config: BenchConfig) -> None:
    longest = max(max(config.prompt_lengths), config.decode_prompt_length + config.new_tokens)
    if config.scenarios == ENCODER_SCENARIOS:
        longest = max(config.prompt_lengths)
    if "serve" in config.scenarios:  # its requests' lengths reach 1½× the configured ones
        longest = max(longest, (config.decode_prompt_length + config.new_tokens) * 3 // 2 + 1)
    check_positions(loaded, longest, f"lower {opt('prompt_lengths')} or {opt('new_tokens')}")


def check_positions(loaded: Any, longest: int, fix: str) -> None:
    """Refuse a sequence longer than the model's positions before any work (``fix`` says how)."""
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit is not None and longest > limit:
        raise BenchError(
            f"{loaded.info.spec!r} takes at most {limit} positions; the longest sequence asked is {longest} "
            f"tokens; {fix}"
        )


def _to_device(model: Any, device: str) -> Any:
    if device == "cpu":
        return model

    if not torch.cuda.is_available():
        raise BenchError(
            f"{given('device', device)} given but torch sees no CUDA device; use {given('device', 'cpu')}"
        )
    return model.to(device)


def _label(scenario: str, params: dict[str, Any]) -> str:
    return f"{scenario} " + " ".join(f"{k}={v}" for k, v in params.items())
