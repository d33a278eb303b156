"""What ``unbottle optimize`` searches for: the objective, the accuracy guard, the budget, the stages.

The objective is one metric to improve (decode tokens/s by default); the guard is a list of goals on
accuracy metrics, each judged on its confidence-interval bound. Screening settings are cheap (a short
A/B, a couple of evaluation windows); the finalists and the winner are measured with the full ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from unbottle.benchmarking.config import check_threads
from unbottle.core.config import Config, check_at_least
from unbottle.core.errors import ConfigError
from unbottle.core.naming import given, opt
from unbottle.sources.base import ENCODER_TASKS
from unbottle.stats import Goal

# objective name → (A/B scenario or None, metric name, unit, higher is better, what it is)
OBJECTIVES: dict[str, tuple[str | None, str, str, bool, str]] = {
    "decode": ("decode", "decode.tokens_per_s", "tokens/s", True, "decode tokens/s (KV cache, batch rows)"),
    "ttft": ("decode", "decode.ttft", "s", False, "time to first token"),
    "latency": ("decode", "decode.request_latency", "s", False, "request latency (prompt in, tokens out)"),
    "prefill": ("prefill", "prefill.latency", "s", False, "prefill latency of the prompt"),
    "throughput": ("decode", "decode.tokens_per_s", "tokens/s", True, "decode tokens/s at --batch-size"),
    "goodput": ("serve", "serve.goodput", "requests/s", True, "requests/s meeting the latency objectives"),
    "size": (None, "size.weights", "MiB", False, "bytes of weights stored"),
    "memory": (None, "memory.peak_rss", "MiB", False, "peak resident memory while decoding"),
}
# An encoder's objectives: a batch through the encoder stack (``encode`` scenario).
ENCODER_OBJECTIVES: dict[str, tuple[str | None, str, str, bool, str]] = {
    "throughput": ("encode", "encode.sequences_per_s", "seq/s", True, "encoded sequences/s at --batch-size"),
    "latency": ("encode", "encode.latency", "s", False, "latency of one encoded batch"),
    "size": OBJECTIVES["size"],
    "memory": (None, "memory.peak_rss", "MiB", False, "peak resident memory while encoding"),
}
SERVE_FIELDS = ("rate", "serve_requests", "slo_ttft_s", "slo_tpot_s")  # the goodput objective's load
# a causal LM's two accuracy metrics, then an encoder's (masked LM's, classifier's)
ACCURACY_METRICS = (
    "perplexity", "accuracy", "embedding_cosine", "pseudo_perplexity", "label_agreement", "label_kl"
)  # fmt: skip
# The objectives speculative decoding can serve (decode steps at batch 1), by their metric, and the
# held-out prompts its greedy output is checked on (``unbottle.optimizer.speculation``).
SPECULATION_SERVES = ("decode.tokens_per_s", "decode.request_latency")
SPECULATION_PROMPTS = 4
# The request every speed measurement serves: a chat turn of a few hundred prompt tokens and a reply.
DEFAULT_WORKLOAD = (256, 64)
DEFAULT_GUARD = ("perplexity:percent-max-degradation=1",)
# An encoder keeps its sentence embeddings: cosine with the float model's ≥ 0.98 on the CI bound.
ENCODER_GUARD = ("embedding_cosine:max-degradation=0.02",)
# A classifier also keeps its labels: the same top label on ≥ 95% of the inputs, on the CI bound.
CLASSIFIER_GUARD = (*ENCODER_GUARD, "label_agreement:max-degradation=0.05")
TASK_GUARD = "accuracy:max-degradation=1"


WINDOWS = 8  # perplexity windows per evaluated part, at least (while they can be 16 tokens or more)


@dataclasses.dataclass(frozen=True)
class OptimizeConfig(Config):
    """One search.

    Attributes:
        model: the model spec (name, folder, .gguf, recipe folder).
        objective: one of ``OBJECTIVES`` (an encoder's: ``ENCODER_OBJECTIVES``); ``auto``: ``decode``
            for a causal LM, ``throughput`` for an encoder.
        goals: accuracy guard as ``METRIC:KIND=VALUE`` texts; empty → perplexity ≤ +1% (and accuracy
            ≤ −1 point when ``task`` is set), each on the CI bound.
        candidates: pass lists to try, each ``"name:k=v + name2"``; empty → the built-in candidates.
        time_budget_s: wall seconds for the whole search, verification included (filling the model
            caches before it starts is not counted); the baseline's rates decide what fits.
        max_trials: candidate trials at most, 1 or more (baseline and verification not counted); None:
            no limit.
        threads: torch threads for every measurement; None: the physical cores.
        batch_size / prompt_length / new_tokens: the request shape every speed measurement serves
            (``--workload prompt=P,new=N``): its prefill, its decode steps and its whole latency are
            measured and verified, whatever the objective.
        screen_rounds / screen_new_tokens / screen_tokens: the cheap first look at each candidate.
        full_rounds / eval_tokens: finalists and verification (perplexity on ``eval_tokens``).
        finalists: how many screened candidates are measured fully.
        task / max_items: an optional multiple-choice task in the guard.
        eval_text: text for perplexity; None: the packaged corpus.
        trial_timeout_s / memory_limit_mib: per-worker limits (None: 75% of the machine's memory).
        seed: prompts and task subsets.
        model_task: ``causal-lm``, or ``masked-lm`` for an encoder (``ModelSource.probe_task``; the
            API fills it in): it picks the objectives, the default guard and the candidates.
        rate / serve_requests / slo_ttft_s / slo_tpot_s: the ``goodput`` objective's load: requests
            arriving at ``rate`` per second (``serve_requests`` per round, around the workload's
            shape) and the objectives a request must meet to count (``comparison.ab.ABConfig``).
        ray: run the trials on a Ray cluster: ``auto`` (the one on this machine, else a one-node
            instance started here) or the head's ``HOST:PORT`` / ``ray://`` address; None: here
            (``unbottle.optimizer.cluster``). Not part of the search's identity: a search resumes
            whether or not the cluster is there.
    """

    model: str = "smollm2-135m"
    objective: str = "auto"
    goals: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    time_budget_s: float = 780.0
    max_trials: int | None = None
    threads: int | None = None
    batch_size: int = 1
    prompt_length: int = DEFAULT_WORKLOAD[0]
    new_tokens: int = DEFAULT_WORKLOAD[1]
    screen_rounds: int = 3
    screen_new_tokens: int = 32
    screen_tokens: int = 1024
    full_rounds: int = 10
    eval_tokens: int = 4096
    finalists: int = 2
    task: str | None = None
    max_items: int = 200
    eval_text: str | None = None
    trial_timeout_s: float = 600.0
    memory_limit_mib: float | None = None
    seed: int = 0
    model_task: str = "causal-lm"
    ray: str | None = None
    rate: float = 1.0
    serve_requests: int = 16
    slo_ttft_s: float = 1.0
    slo_tpot_s: float = 0.1

    def __post_init__(self) -> None:
        encoder = self.model_task in ENCODER_TASKS
        if self.objective == "auto":
            object.__setattr__(self, "objective", "throughput" if encoder else "decode")
        allowed = ENCODER_OBJECTIVES if encoder else OBJECTIVES
        if self.objective not in allowed:
            what = "an encoder (it generates no tokens)" if encoder else "a causal LM"
            raise ConfigError(
                f"{given('objective', self.objective, quote=True)} given; allowed for {what}: "
                f"{', '.join(allowed)}"
            )
        if encoder and self.task:
            raise ConfigError(
                f"{given('task', self.task)} given, but {self.model!r} is an encoder: its accuracy is "
                "the agreement of its embeddings with the float model's; leave the task out"
            )
        check_at_least(
            [
                ("batch_size", self.batch_size, 1),
                ("prompt_length", self.prompt_length, 1, "--workload prompt="),
                ("new_tokens", self.new_tokens, 2, "--workload new="),
                ("screen_rounds", self.screen_rounds, 3),
                ("screen_new_tokens", self.screen_new_tokens, 2),
                ("screen_tokens", self.screen_tokens, 64),
                ("full_rounds", self.full_rounds, 3),
                ("eval_tokens", self.eval_tokens, 64),
                ("finalists", self.finalists, 1),
                ("max_items", self.max_items, 1),
            ]
        )
        if self.max_trials is not None and self.max_trials < 1:
            raise ConfigError(
                f"{given('max_trials', self.max_trials)} given; allowed: 1 or more (a search that tries no "
                "candidate has nothing to verify; `unbottle bench` and `unbottle eval` measure the "
                "model alone)"
            )
        if not self.time_budget_s > 0:
            shown = given("time_budget_s", self.time_budget_s, "--time-budget", quote=True)
            raise ConfigError(f"{shown} given; allowed: seconds > 0")
        if self.threads is not None:
            check_threads(self.threads)
        if self.objective == "goodput":
            for name in SERVE_FIELDS:
                if not getattr(self, name) > (1 if name == "serve_requests" else 0):
                    shown = given(name, getattr(self, name))
                    raise ConfigError(f"{shown} given; allowed: a number > 0 (serve_requests: 2 or more)")
        if self.ray is not None and not str(self.ray).strip():
            raise ConfigError(
                f"{given('ray', self.ray, quote=True)} given; allowed: auto or the head's HOST:PORT"
            )
        object.__setattr__(self, "goals", tuple(self.goals))
        object.__setattr__(self, "candidates", tuple(self.candidates))
        self.guard()  # parse and check now, so a bad goal fails before anything runs

    def guard(self) -> list[Goal]:
        """The accuracy goals (defaults filled in); raises ConfigError on contradictions."""
        if self.model_task in ENCODER_TASKS:
            classifier = self.model_task == "sequence-classification"
            texts = list(self.goals) or list(CLASSIFIER_GUARD if classifier else ENCODER_GUARD)
        else:
            texts = list(self.goals) or list(DEFAULT_GUARD) + ([TASK_GUARD] if self.task else [])
        goals = [Goal.parse(t) for t in texts]
        allowed = ACCURACY_METRICS[2:] if self.is_encoder() else ACCURACY_METRICS[:2]
        for g in goals:
            if g.metric not in allowed:
                of = "an encoder's" if self.is_encoder() else "a causal LM's"
                raise ConfigError(
                    f"goal {str(g)!r} is on {g.metric!r}; {of} accuracy guard takes goals on "
                    f"{', '.join(allowed)} (the objective is chosen with {opt('objective')})"
                )
            if g.metric == "accuracy" and not self.task:
                raise ConfigError(f"goal {str(g)!r} needs a task: add {given('task', 'NAME')}")
            if g.kind in ("min-improvement", "percent-min-improvement"):
                raise ConfigError(
                    f"goal {str(g)!r} asks accuracy to improve, which no speed optimisation can promise; "
                    f"use {g.metric}:{g.kind.replace('min-improvement', 'max-degradation')}=VALUE"
                )
        _check_contradictions(goals)
        return goals

    def objective_spec(self) -> tuple[str | None, str, str, bool, str]:
        return (ENCODER_OBJECTIVES if self.is_encoder() else OBJECTIVES)[self.objective]

    def is_encoder(self) -> bool:
        return self.model_task in ENCODER_TASKS

    def speculation_applies(self) -> bool:
        """Whether the search ends by trying speculative decoding on its winner: a decode-step
        objective at batch 1."""
        return self.batch_size == 1 and self.objective_spec()[1] in SPECULATION_SERVES

    def search_key(self) -> str:
        """Identifies the search: the same command (budget and limits aside) resumes the same search."""
        ignored = {"time_budget_s", "max_trials", "trial_timeout_s", "memory_limit_mib", "ray"}
        if self.objective != "goodput":
            ignored |= set(SERVE_FIELDS)  # only the load's objective depends on them
        data = {k: v for k, v in self.to_dict().items() if k not in ignored}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def ab_settings(self, stage: str) -> dict[str, Any]:
        """The ``ABConfig`` fields for ``screen`` or ``full`` (verification uses ``full``)."""
        scenario = self.objective_spec()[0] or ("encode" if self.is_encoder() else "decode")
        screen = stage == "screen"
        serve = {k: getattr(self, k) for k in SERVE_FIELDS} if scenario == "serve" else {}
        return {
            **serve,
            "scenario": scenario,
            "rounds": self.screen_rounds if screen else self.full_rounds,
            "batch_size": self.batch_size,
            "prompt_length": self.prompt_length,
            "new_tokens": self.screen_new_tokens if screen else self.new_tokens,
            "threads": self.threads,
            "seed": self.seed,
        }

    def eval_settings(self, stage: str) -> dict[str, Any]:
        """The ``EvalConfig`` fields for ``screen``, ``full`` or ``held_out``.

        Screening reads the text's first ``screen_tokens`` tokens and the finalists its first
        ``eval_tokens`` (the selection part); the verification reads the next ``eval_tokens``
        (``held_out``), which nothing before it saw, so the winner's accuracy is measured out of sample.
        A task's items split the same way: halves of its seeded shuffle, the screen a prefix of the
        selection half.
        Windows are at most 512 tokens and at least ``WINDOWS`` per part, so the perplexity interval
        rests on enough windows (a t-interval over 2 windows is 5× wider than over 8).
        """
        screen = stage == "screen"
        tokens = self.screen_tokens if screen else self.eval_tokens
        window = min(512, max(16, tokens // WINDOWS))
        return {
            "eval_text": self.eval_text,
            "eval_tokens": tokens,
            "window": window,
            "stride": window,
            "task": self.task,
            "max_items": max(20, self.max_items // 5) if screen else self.max_items,
            "start_token": self.eval_tokens if stage == "held_out" else 0,
            "item_part": ("held_out" if stage == "held_out" else "selection") if self.task else None,
        }


def parse_duration(text: str | float, name: str | None = None) -> float:
    """``900``, ``"900s"``, ``"15m"``, ``"1.5h"`` → seconds; ``name`` says what was given in an error
    (default: ``time_budget``, ``--time-budget`` from the CLI)."""
    shown = f"{name} {text!r}" if name else given("time_budget", text, quote=True)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise ConfigError(f"{shown} given; allowed: seconds or a duration like 900s, 15m, 1h")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if value <= 0:
        raise ConfigError(f"{shown} given; it must be more than 0")
    return value


def parse_workload(text: str) -> tuple[int, int]:
    """``prompt=512,new=128`` (either part may be left out: the default fills it) → (prompt, new)."""
    allowed = "allowed: prompt=TOKENS,new=TOKENS, e.g. prompt=512,new=128"
    values = dict(zip(("prompt", "new"), DEFAULT_WORKLOAD, strict=True))
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        shown = given("workload", text, quote=True)
        if not eq or key not in values:
            raise ConfigError(f"{shown} given: {part!r} is not understood; {allowed}")
        try:
            values[key] = int(value)
        except ValueError:
            raise ConfigError(f"{shown} given: {key}={value!r} is not a number; {allowed}") from None
        low = 1 if key == "prompt" else 2
        if values[key] < low:
            raise ConfigError(f"{shown} given: {key} must be at least {low}; {allowed}")
    return values["prompt"], values["new"]


def _check_contradictions(goals: list[Goal]) -> None:
    seen: dict[tuple[str, str], Goal] = {}
    for g in goals:
        if (g.metric, g.kind) in seen and seen[(g.metric, g.kind)].value != g.value:
            raise ConfigError(
                f"goals {str(seen[(g.metric, g.kind)])!r} and {str(g)!r} contradict each other; "
                "give one limit per metric and kind"
            )
        seen[(g.metric, g.kind)] = g
        if g.kind == "threshold" and g.metric == "perplexity" and g.value <= 1:
            raise ConfigError(f"goal {str(g)!r}: perplexity is always > 1, so no model can meet it")
