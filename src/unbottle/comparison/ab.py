"""Interleaved A/B benchmarking: both models run the same scenario in alternating rounds.

Machine drift (another process, thermal state, frequency) moves both sides of a round together, so
statistics paired by round cancel it. The order alternates A B, B A, A B, … so neither side always
runs first (caches, allocator state). Each round's value is the median of that round's samples.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from unbottle.benchmarking import apply_threads, check_positions, load_draft
from unbottle.benchmarking.config import check_threads
from unbottle.benchmarking.scenarios import decode_once, encode_once, generate_once, prefill_once
from unbottle.benchmarking.serving import check_servable, make_requests, serve, serve_metrics
from unbottle.benchmarking.timing import make_timer
from unbottle.core.config import Config, check_at_least
from unbottle.core.errors import ConfigError
from unbottle.core.measurement import Measurement
from unbottle.core.naming import given, opt
from unbottle.data.prompts import make_prompts
from unbottle.runtime.speculative import SPECULATIVE, corpus_followers, parse_speculative, speculative_once
from unbottle.sources.base import require_causal_lm

AB_SCENARIOS = ("decode", "prefill", "generate", "encode", "serve")

# scenario → metric suffix → (unit, higher_is_better)
AB_METRICS: dict[str, dict[str, tuple[str, bool]]] = {
    "decode": {
        "tokens_per_s": ("tokens/s", True),
        "token_latency": ("s", False),
        "ttft": ("s", False),
        "request_latency": ("s", False),
    },
    "prefill": {"latency": ("s", False), "tokens_per_s": ("tokens/s", True)},
    "generate": {"latency": ("s", False), "tokens_per_s": ("tokens/s", True)},
    "encode": {  # encoders
        "latency": ("s", False),
        "sequences_per_s": ("sequences/s", True),
        "tokens_per_s": ("tokens/s", True),
    },  # fmt: skip
    "serve": {  # one round: the same stream of requests served by each side (``serving``)
        "ttft": ("s", False),  # the round's median over its requests
        "ttft_p90": ("s", False),
        "tpot": ("s", False),
        "request_latency": ("s", False),
        "throughput": ("tokens/s", True),
        "goodput": ("requests/s", True),
        "completed": ("requests/s", True),
    },  # fmt: skip
}


@dataclasses.dataclass(frozen=True)
class ABConfig(Config):
    """An interleaved A/B benchmark.

    Attributes:
        scenario: ``decode`` (default), ``prefill`` or ``generate`` for causal LMs; ``encode`` for
            encoders (``batch_size`` sequences of ``prompt_length`` tokens through the encoder stack).
        rounds: paired rounds; each runs A and B back to back.
        repeats_per_round: scenario repeats per side per round (the round value is their median).
        warmup: unmeasured repeats per side before the first round.
        batch_size: batch rows.
        prompt_length: prompt tokens.
        new_tokens: tokens generated per decode/generate repeat.
        threads: torch threads; None means the machine's physical cores.
        seed: prompt selection.
        speculative: ``lookup`` or ``draft=MODEL``: B decodes speculatively, drafting by prompt lookup
            or with that model (A plainly), so the A/B measures what speculation gains on this model and
            prompt; None: both plain.
        rate / serve_requests / max_batch / slo_ttft_s / slo_tpot_s: the ``serve`` scenario's stream
            (Poisson arrivals at ``rate`` per second, prompts around ``prompt_length``, outputs around
            ``new_tokens``; the same stream every round and side) and the objectives goodput counts.
    """

    scenario: str = "decode"
    rounds: int = 10
    repeats_per_round: int = 1
    warmup: int = 1
    batch_size: int = 1
    prompt_length: int = 32
    new_tokens: int = 64
    threads: int | None = None
    seed: int = 0
    speculative: str | None = None
    rate: float = 1.0
    serve_requests: int = 16
    max_batch: int = 8
    slo_ttft_s: float = 1.0
    slo_tpot_s: float = 0.1

    def __post_init__(self) -> None:
        if self.scenario not in AB_SCENARIOS:
            raise ConfigError(
                f"{given('scenario', self.scenario, quote=True)} given; allowed: {', '.join(AB_SCENARIOS)}"
            )
        check_at_least(
            [
                ("rounds", self.rounds, 3),
                ("repeats_per_round", self.repeats_per_round, 1),
                ("batch_size", self.batch_size, 1),
                ("prompt_length", self.prompt_length, 1),
                ("new_tokens", self.new_tokens, 2),
                ("warmup", self.warmup, 0),
                ("serve_requests", self.serve_requests, 2),
                ("max_batch", self.max_batch, 1),
            ]
        )
        for name in ("rate", "slo_ttft_s", "slo_tpot_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{given(name, getattr(self, name))} given; allowed: a number > 0")
        if self.threads is not None:
            check_threads(self.threads)
        if self.speculative is not None:
            parse_speculative(self.speculative)
        if self.speculative is not None and self.scenario != "decode":
            raise ConfigError(
                f"{given('speculative', self.speculative, quote=True)} given with the {self.scenario} "
                f"scenario; allowed: {', '.join(SPECULATIVE)}, with the decode scenario"
            )

    def metric_names(self) -> list[str]:
        return [f"{self.scenario}.{k}" for k in AB_METRICS[self.scenario]]


@dataclasses.dataclass
class ABRounds:
    """Per-round values of every metric for both sides, and the order each round ran in.

    ``blocks``: rounds per time block when they ran in blocks separated by other work (``joined``).
    """

    config: ABConfig
    a: dict[str, list[float]]
    b: dict[str, list[float]]
    order: list[str]
    blocks: list[int] | None = None
    speculation: dict[str, float] | None = None  # B's median draft acceptance and tokens per step

    @classmethod
    def joined(cls, parts: list[ABRounds]) -> ABRounds:
        """Blocks of rounds of one scenario, run at different times, as one set with its blocks."""
        first = parts[0]
        a = {k: [v for p in parts for v in p.a[k]] for k in first.a}
        b = {k: [v for p in parts for v in p.b[k]] for k in first.b}
        config = dataclasses.replace(first.config, rounds=sum(p.config.rounds for p in parts))
        return cls(config, a, b, [o for p in parts for o in p.order], [p.config.rounds for p in parts])

    def to_measurements(self) -> list[Measurement]:
        """Per-round values as measurements (params ``side`` and ``per: round``), for the store."""
        out = []
        for side, values in (("A", self.a), ("B", self.b)):
            for name, rounds in values.items():
                unit, higher = AB_METRICS[self.config.scenario][name.split(".", 1)[1]]
                params = {"side": side, "per": "round", "scenario": self.config.scenario}
                out.append(Measurement(name, unit, rounds, higher, "ab", params))
        return out

    @classmethod
    def from_measurements(cls, config: ABConfig, ms: list[Measurement], order: list[str]) -> ABRounds:
        a = {m.name: m.samples for m in ms if m.params.get("side") == "A" and m.params.get("per") == "round"}
        b = {m.name: m.samples for m in ms if m.params.get("side") == "B" and m.params.get("per") == "round"}
        return cls(config, a, b, order)


def run_ab(
    model_a: Any, model_b: Any, config: ABConfig, progress: Callable[[str, int, float], None] | None = None
) -> ABRounds:
    """Run ``config.rounds`` interleaved rounds of the scenario on two loaded models.

    Args:
        model_a: the baseline ``Loaded``.
        model_b: the candidate ``Loaded`` (may be the same object, for an A-vs-A noise floor).
        config: the A/B settings.
        progress: called as ``progress(label, rounds_done, elapsed_s)``.
    """
    _check_kinds(model_a, model_b, config.scenario)
    longest = config.prompt_length + (0 if config.scenario in ("prefill", "encode") else config.new_tokens)
    if config.scenario == "serve":  # requests draw their lengths up to 1.5x the configured ones
        longest = (3 * longest + 1) // 2
    for loaded in (model_a, model_b):
        check_positions(loaded, longest, "lower the prompt length or the new tokens")
    apply_threads(config.threads)
    draft = load_draft(model_b, config.speculative)
    spec: dict[str, list[float]] = {}
    fns = {"A": _one_repeat(model_a, config), "B": _one_repeat(model_b, config, spec, draft)}
    for _ in range(config.warmup):
        fns["A"](), fns["B"]()
    values: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    order: list[str] = []
    start = time.perf_counter()
    for r in range(config.rounds):
        sides = ("A", "B") if r % 2 == 0 else ("B", "A")
        order.append("".join(sides))
        for side in sides:
            for name, value in _round_values(fns[side], config).items():
                values[side].setdefault(name, []).append(value)
        if progress is not None:
            progress(f"A/B {config.scenario}", r + 1, time.perf_counter() - start)
    speculation = {k: statistics.median(v) for k, v in spec.items()} if spec else None
    return ABRounds(config, values["A"], values["B"], order, speculation=speculation)


def _check_kinds(model_a: Any, model_b: Any, scenario: str) -> None:
    """Both sides one kind of model, and a causal LM where the scenario generates tokens."""
    a, b = model_a.info, model_b.info
    if a.task != b.task:
        raise ConfigError(
            f"A ({a.spec!r}) is a {a.task} model and B ({b.spec!r}) a {b.task} model; an A/B compares "
            "two versions of one kind of model"
        )
    if scenario == "encode" and a.task == "causal-lm":
        raise ConfigError(
            f"the encode scenario runs encoders; {a.spec!r} is a causal-lm model: give {opt('scenario')} "
            "prefill or decode"
        )
    if scenario not in ("prefill", "encode"):
        require_causal_lm(
            model_a, a.spec, f"the {scenario} scenario generates tokens; give {opt('scenario')} prefill"
        )


def _one_repeat(
    loaded: Any, config: ABConfig, spec: dict[str, list[float]] | None = None, draft: Any = None
) -> Callable[[], dict[str, list[float]]]:
    """One repeat of the scenario on ``loaded``; with ``spec`` (side B) and ``config.speculative``,
    a speculative decode whose acceptance figures are collected into ``spec``."""
    model = loaded.model
    prompt = make_prompts(
        loaded.tokenizer, model.config.vocab_size, config.batch_size, config.prompt_length, config.seed
    )
    timer = make_timer("cpu")
    if config.scenario == "decode" and config.speculative and spec is not None:
        table = corpus_followers(loaded.tokenizer, model.config.vocab_size)

        def speculative() -> dict[str, list[float]]:
            samples = speculative_once(model, prompt, config.new_tokens, timer, draft, table)
            for key in ("acceptance", "tokens_per_step"):
                spec.setdefault(key, []).extend(samples.pop(key))
            return samples

        return speculative
    if config.scenario == "decode":
        return lambda: decode_once(model, prompt, config.new_tokens, timer)
    if config.scenario == "prefill":
        return lambda: prefill_once(model, prompt, timer)
    if config.scenario == "encode":
        return lambda: encode_once(model, prompt, timer)
    if config.scenario == "serve":
        return _serve_repeat(loaded, config)
    return lambda: generate_once(model, prompt, config.new_tokens, timer)


def _serve_repeat(loaded: Any, config: ABConfig) -> Callable[[], dict[str, list[float]]]:
    """One serve of the round's stream (the same requests, seeded, for both sides every round)."""
    check_servable(loaded.model)

    def once() -> dict[str, list[float]]:
        requests = make_requests(
            loaded, config.rate, config.serve_requests, config.prompt_length, config.new_tokens, config.seed
        )
        serve(loaded.model, requests, config.max_batch)
        m = serve_metrics(requests, config.slo_ttft_s, config.slo_tpot_s)
        out = {k: [statistics.median(m[k])] for k in ("ttft", "tpot", "request_latency")}
        out["ttft_p90"] = [float(np.percentile(m["ttft"], 90))]
        return {**out, **{k: m[k] for k in ("throughput", "goodput", "completed")}}

    return once


def _round_values(fn: Callable[[], dict[str, list[float]]], config: ABConfig) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for _ in range(config.repeats_per_round):
        for key, vals in fn().items():
            samples.setdefault(key, []).extend(vals)
    return {f"{config.scenario}.{k}": statistics.median(v) for k, v in samples.items()}
