"""The benchmark configuration: which scenarios, at which sizes, for how long.

Validated on construction so a bad value fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses

from unbottle.core.config import Config
from unbottle.core.env import logical_cpus
from unbottle.core.errors import ConfigError
from unbottle.core.naming import given, opt
from unbottle.runtime.speculative import parse_speculative

SCENARIOS = ("prefill", "decode", "generate")  # the default set
ALL_SCENARIOS = (*SCENARIOS, "serve", "encode")  # serve: requests arriving at rates, batched as they come
ENCODER_SCENARIOS = ("encode",)  # encoders (masked-LM models): batches of sequences through the stack


@dataclasses.dataclass(frozen=True)
class BenchConfig(Config):
    """How to benchmark a causal LM.

    Attributes:
        scenarios: which of ``prefill``, ``decode``, ``generate``, ``serve`` to run on a causal LM
            (default: the first three; ``serve`` is ``unbottle.benchmarking.serving``), or ``encode`` on
            an encoder (its default): each batch size at each of ``prompt_lengths`` as sequence length.
        prompt_lengths: prompt tokens for each prefill point.
        batch_sizes: batch sizes for each decode point.
        new_tokens: tokens generated per decode/generate repeat.
        decode_prompt_length: prompt tokens before decoding (and for generate).
        threads: torch intra-op threads; None means the machine's physical cores.
        warmup: unmeasured runs before each point.
        min_repeats: measured repeats per point, at least.
        min_time_s: measured seconds per point, at least (both minima must be met).
        device: ``cpu`` or ``cuda[:i]``.
        seed: seed for prompt selection.
        rates: ``serve``: request arrival rates (per second, Poisson) to serve in turn.
        serve_requests: ``serve``: requests per rate (prompts ~``decode_prompt_length``, outputs
            ~``new_tokens`` tokens, each drawn from ½× to 1½×).
        max_batch: ``serve``: requests decoded together at most; later arrivals queue.
        slo_ttft_s / slo_tpot_s: ``serve``: the latency objectives goodput counts requests against
            (time to first token; time per output token after it).
        speculative: ``lookup`` (prompt lookup) or ``draft=MODEL`` (a smaller model with the same
            vocabulary drafts): decode speculatively (the same greedy tokens; adds draft acceptance and
            tokens per forward pass); batch 1 only. None: plain decoding.
    """

    scenarios: tuple[str, ...] = SCENARIOS
    prompt_lengths: tuple[int, ...] = (32, 512)
    batch_sizes: tuple[int, ...] = (1, 4)
    new_tokens: int = 128
    decode_prompt_length: int = 32
    threads: int | None = None
    warmup: int = 1
    min_repeats: int = 5
    min_time_s: float = 2.0
    device: str = "cpu"
    seed: int = 0
    speculative: str | None = None
    rates: tuple[float, ...] = (1.0, 2.0, 4.0)
    serve_requests: int = 32
    max_batch: int = 8
    slo_ttft_s: float = 1.0
    slo_tpot_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("scenarios", "prompt_lengths", "batch_sizes", "rates"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        unknown = [s for s in self.scenarios if s not in ALL_SCENARIOS]
        if unknown or not self.scenarios:
            raise ConfigError(f"scenario(s) {unknown or '(none)'} given; allowed: {', '.join(ALL_SCENARIOS)}")
        self._check_serve()
        _positive_list("prompt_lengths", self.prompt_lengths)
        _positive_list("batch_sizes", self.batch_sizes)
        _positive("new_tokens", self.new_tokens, minimum=2)
        _positive("decode_prompt_length", self.decode_prompt_length)
        _positive("min_repeats", self.min_repeats)
        if self.warmup < 0:
            raise ConfigError(f"{given('warmup', self.warmup)} given; allowed: 0 or more")
        if not self.min_time_s >= 0:
            raise ConfigError(
                f"{given('min_time_s', self.min_time_s, '--min-time')} given; allowed: 0 or more seconds"
            )
        if self.threads is not None:
            check_threads(self.threads)
        if self.speculative is not None:
            parse_speculative(self.speculative)
            if self.batch_sizes != (1,):
                raise ConfigError(
                    f"{given('speculative', self.speculative, quote=True)} with {opt('batch_sizes')} "
                    f"{','.join(map(str, self.batch_sizes))} given; speculative decoding decodes one "
                    f"sequence: give {opt('batch_sizes')} 1"
                )
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"{given('device', self.device, quote=True)} given; allowed: cpu, cuda, cuda:N")

    def _check_serve(self) -> None:
        _positive("serve_requests", self.serve_requests, minimum=2)
        _positive("max_batch", self.max_batch)
        for name in ("slo_ttft_s", "slo_tpot_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{given(name, getattr(self, name))} given; allowed: seconds > 0")
        if not self.rates or not all(isinstance(r, int | float) and 0 < r < float("inf") for r in self.rates):
            raise ConfigError(
                f"{given('rates', ','.join(map(str, self.rates)) or '(none)')} given; allowed: request "
                "rates per second > 0, e.g. 1,2,4"
            )

    def n_points(self) -> int:
        """How many scenario points a benchmark runs (the order of ``unbottle.benchmarking._points``): one per
        prefill length and decode batch size, one generate, one per serve rate."""
        return (
            len(self.prompt_lengths) * ("prefill" in self.scenarios)
            + len(self.batch_sizes) * ("decode" in self.scenarios)
            + ("generate" in self.scenarios)
            + len(self.rates) * ("serve" in self.scenarios)
            + len(self.prompt_lengths) * len(self.batch_sizes) * ("encode" in self.scenarios)
        )


def check_threads(threads: int) -> None:
    """Threads must be between 1 and the CPUs this process may use."""
    available = logical_cpus()
    if not 1 <= threads <= available:
        raise ConfigError(
            f"{given('threads', threads)} given; this machine lets this process use {available} CPU(s): "
            f"use 1..{available}"
        )


def _positive(field: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{given(field, value, quote=True)} given; allowed: an integer >= {minimum}")


def _positive_list(field: str, values: tuple[int, ...]) -> None:
    if not values:
        raise ConfigError(f"{opt(field)} is empty; give at least one positive integer, e.g. 32,512")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{opt(field)} contains {v!r}; allowed: positive integers, e.g. 32,512")
