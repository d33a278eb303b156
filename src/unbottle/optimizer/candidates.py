"""Candidates: lists of passes to try, the built-in first round, compositions and per-layer fallbacks.

A candidate is an ordered list of pass configs; its key is the passes' labels joined by `` + ``
(``onnx:quantize=int8-block``, ``prune-structured + wo-int8``), which is also how a user writes one
on the command line. The built-in first round is ordered by what batch-1 decoding on a CPU is bound
by: the bytes of weights read per token, so formats that shrink those bytes come first. Without a
stored profile, ``host_order`` reorders the front from this host's measured peaks (the weight formats
by the decode gain the bandwidth and matmul peaks allow, or the faster matmul dtypes when a phase is
compute-bound); without stored peaks the built-in order stands.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from typing import Any

from unbottle.core.env import physical_cores
from unbottle.core.errors import ConfigError
from unbottle.passes import check_composition, parse_pass, unavailable
from unbottle.passes.base import PassConfig, matches
from unbottle.passes.registry import config_class
from unbottle.profiling.diagnose import WEIGHT_FORMAT_CANDIDATES, compute_recommendations
from unbottle.profiling.peaks import stored_peaks
from unbottle.profiling.roofline import format_decode_gain

# First round, in order of expected decode gain on a CPU (memory-bound batch-1 decoding: fewer
# weight bytes per token first; ONNX Runtime's fused kernels ahead of eager torch; see
# benchmarks/README.md for the measurements behind the order).
DEFAULT_CANDIDATES = (
    "genai:weights=gguf",
    "genai:weights=gguf,prefill=torch",
    "genai:weights=blocks",
    "genai:weights=blocks,prefill=torch",
    "genai:precision=int8",
    "onnx:quantize=int8-block",
    "wo-int8",
    "wo-int4:group_size=32",
    "onnx",
    "onnx:quantize=int4-block",
    "precision",
    "dynamic-int8",
    "compile",
    "static-int8",
    "prune-structured:amount=0.1",
    "lowrank",
)
# The first PRIMARY built-in candidates are screened, rescued and combined before the rest are
# tried with the time left: on CPUs they are the ones that can shrink weight bytes several-fold.
PRIMARY = 9
# For size and memory objectives fewer bits matter more than kernel speed.
SIZE_FIRST = (
    "genai:weights=gguf",
    "genai:weights=blocks",
    "genai:precision=int4,algo=k_quant",
    "onnx:quantize=int4-block",
    "wo-int4:group_size=32",
    "onnx:quantize=int8-block",
    "wo-int8",
    "dynamic-int8",
    "precision",
    "prune-structured:amount=0.1",
    "lowrank",
)
# An encoder's batch is compute-bound (many rows per weight read): int8 GEMM and bf16 first, in torch
# and in ONNX Runtime (its dynamic int8 MatMulInteger, as encoders are commonly served on CPUs); whole
# layers dropped (BERT and RoBERTa); GenAI builds take decoders only.
ENCODER_CANDIDATES = (
    "dynamic-int8",
    "onnx:quantize=int8-dynamic",
    "onnx",
    "static-int8",
    "precision",
    "compile",
    "wo-int8",
    "wo-int4:group_size=32",
    "lowrank",
    "prune-structured:target=layers,amount=0.2",
)
ENCODER_SIZE_FIRST = ("wo-int4:group_size=32", "wo-int8", "dynamic-int8", "precision", "lowrank")
# Passes of one family change the same thing (weight format, structure), so a composition takes
# at most one of each.
FAMILIES = {
    "precision": "format",
    "dynamic-int8": "format",
    "wo-int8": "format",
    "wo-int4": "format",
    "static-int8": "format",
    "prune": "structure",
    "prune-structured": "structure",
    "lowrank": "structure",
    "compile": "compile",
    "onnx": "export",
    "genai": "export",
}
# Export passes that build from float32 weights: a weight format before them can't compose.
FLOAT_ONLY = ("genai",)
# Candidates that need the model to come from a .gguf file (they carry its blocks over).
NEEDS_GGUF = ("genai:weights=gguf", "genai:weights=gguf,prefill=torch")
# Candidates for float sources only: on a .gguf model the file's own blocks (NEEDS_GGUF) carry the
# same formats over without re-quantizing.
FLOAT_SOURCE = ("genai:weights=blocks", "genai:weights=blocks,prefill=torch")

FAMILY_ORDER = ("structure", "format", "compile", "export")

# The dtype each weight-format candidate's decode kernel multiplies in: ONNX Runtime's MatMulNBits at
# accuracy level 4 quantizes activations to int8; torch's int4 kernel takes bf16 activations.
DECODE_COMPUTE = {
    "genai:weights=gguf": "int8",
    "genai:precision=int8": "int8",
    "onnx:quantize=int8-block": "int8",
    "wo-int8": "float32",
    "wo-int4:group_size=32": "bfloat16",
}
# The phase each speed objective measures (size and memory have none).
OBJECTIVE_PHASE = {
    "decode": "decode",
    "throughput": "decode",
    "latency": "decode",  # a request's latency is mostly its decode steps unless the prompt is long
    "prefill": "prefill",
    "ttft": "prefill",
}
# FLOPs per byte of batch-1 decoding with fp32 weights: one multiply-add (2 FLOPs) per 4-byte weight.
DECODE_INTENSITY = 0.5


@dataclasses.dataclass(frozen=True)
class Candidate:
    """Passes to apply in order, where the candidate came from, and its stable key."""

    configs: tuple[PassConfig, ...]
    origin: str = "single"  # single | fallback | composition
    parent: str | None = None

    @property
    def key(self) -> str:
        return " + ".join(c.label() for c in self.configs) or "baseline"

    def to_payload(self) -> list[dict[str, Any]]:
        return [{**c.to_dict(), "name": c.name} for c in self.configs]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "origin": self.origin, "parent": self.parent, "passes": self.to_payload()}


def parse_candidate(text: str, origin: str = "single") -> Candidate:
    """``"name:k=v + name2"`` → a checked Candidate.

    Raises:
        ConfigError: an unknown pass, a bad parameter or an impossible order.
    """
    parts = [p.strip() for p in text.split("+") if p.strip()]
    if not parts:
        raise ConfigError(
            f"candidate {text!r} given; expected passes joined by ' + ', e.g. 'wo-int8 + compile'"
        )
    configs = tuple(parse_pass(p) for p in parts)
    check_composition(list(configs))
    return Candidate(configs, origin)


def candidates_from_payload(passes: list[dict[str, Any]]) -> list[PassConfig]:
    return [config_class(p["name"]).from_dict({k: v for k, v in p.items() if k != "name"}) for p in passes]


def first_round(
    texts: tuple[str, ...],
    objective: str,
    preferred: list[str] | None = None,
    gguf: bool = True,
    encoder: bool = False,
) -> tuple[list[Candidate], dict[str, str], int]:
    """The candidates to screen, those skipped with the reason (``{key: why}``), and how many of the
    chosen ones form the primary tier (all of them when the user named the candidates).

    ``preferred`` (a profile's recommendations, best first) moves those built-in candidates to the
    front; candidates the user named keep the user's order. ``gguf``: the model comes from a .gguf
    file (else the candidates that carry its blocks over are skipped). ``encoder``: the built-in
    candidates are the encoder's (all of them primary).
    """
    user_given = bool(texts)
    if not texts:
        size_first = objective in ("size", "memory")
        if encoder:
            texts = ENCODER_SIZE_FIRST if size_first else ENCODER_CANDIDATES
        else:
            texts = SIZE_FIRST if size_first else DEFAULT_CANDIDATES
        if preferred:
            front = [t for t in preferred if t in texts]
            texts = tuple(front + [t for t in texts if t not in front])
    chosen, skipped = [], {}
    for text in texts:
        cand = parse_candidate(text)
        reasons = [r for c in cand.configs for r in unavailable(c)]
        if reasons:
            skipped[cand.key] = "this machine can't run it: " + "; ".join(reasons)
        elif not gguf and any(c.label() in NEEDS_GGUF for c in cand.configs):
            skipped[cand.key] = "the model was not loaded from a .gguf file, whose blocks it carries over"
        elif gguf and not user_given and any(c.label() in FLOAT_SOURCE for c in cand.configs):
            skipped[cand.key] = (
                "the model comes from a .gguf file: genai:weights=gguf carries its own blocks over "
                "instead of computing them again from the dequantized weights"
            )
        elif cand.key not in {c.key for c in chosen}:
            chosen.append(cand)
    primary = (
        len(chosen)
        if user_given or encoder
        else sum(1 for t in texts[:PRIMARY] if parse_candidate(t).key not in skipped)
    )
    return chosen, skipped, primary


def host_order(
    peaks: Any | None, objective: str, weight_bytes: float | None = None
) -> tuple[list[str] | None, str]:
    """The built-in candidates this host's measured peaks put first for the objective's phase.

    Batch-1 decoding reads every weight for 2 FLOPs: below the fp32 ridge (at the bandwidth the
    weights meet) it is memory-bound and the weight formats go first, by ``format_decode_gain``
    (ties keep the built-in order); otherwise, and for prefill (each weight reused across the
    prompt), the matmul dtypes measured faster than fp32 go first, by their measured ratio.

    Args:
        peaks: stored ``Peaks`` for this host and thread count (``profile.peaks.stored_peaks``); None
            when there are none (nothing is measured here: this runs in the search's hot path).
        objective: the search objective.
        weight_bytes: the model's fp32 weight bytes, to tell cache-resident formats (None: DRAM).

    Returns:
        ``(order, why)``: the candidates for ``first_round``'s ``preferred`` (None: keep the built-in
        order) and one line for the search log saying where the order came from.
    """
    phase = OBJECTIVE_PHASE.get(objective)
    if phase is None:
        return None, ""
    if peaks is None:
        return None, "no stored machine peaks for this host and thread count: built-in candidate order"
    which, gbps = peaks.bandwidth_for(weight_bytes) if weight_bytes else ("dram", peaks.bandwidth_gbps)
    ridge = peaks.ridge("float32", gbps)
    if phase == "decode" and ridge > DECODE_INTENSITY:
        gains = {
            cand: format_decode_gain(peaks, fmt, DECODE_COMPUTE[cand], weight_bytes)
            for cand, fmt in WEIGHT_FORMAT_CANDIDATES.items()
        }
        order = sorted(gains, key=lambda c: -gains[c])
        listed = ", ".join(f"{c} ≤{gains[c]:.1f}x" for c in order)
        return order, (
            f"candidate order from this host's peaks: batch-1 decode is memory-bound "
            f"({DECODE_INTENSITY} FLOP/byte below the fp32 ridge at {ridge:.1f}, {which} bandwidth "
            f"{gbps:.1f} GB/s): {listed} first"
        )
    recs = sorted(compute_recommendations(peaks), key=lambda r: -r["gain"])
    if not recs:
        return None, f"this host's peaks favour no faster matmul dtype for {phase}: built-in candidate order"
    listed = ", ".join(f"{r['candidate']} ≤{r['gain']:.1f}x" for r in recs)
    why = f"candidate order from this host's peaks: {phase} is compute-bound: {listed} first"
    return [r["candidate"] for r in recs], why


def compositions(good: list[tuple[Candidate, float]], limit: int = 3) -> list[Candidate]:
    """Pairs of candidates that each helped, best expected gain first.

    Args:
        good: ``(candidate, objective gain factor)`` for candidates that improved the objective and
            kept the guard on screening.
        limit: how many compositions to return at most.
    """
    ranked = sorted(good, key=lambda cg: -cg[1])
    pairs: list[tuple[float, Candidate]] = []
    for (a, ga), (b, gb) in itertools.combinations(ranked, 2):
        # structure changes come before the weight format, which comes before compile and export
        configs = tuple(
            sorted(a.configs + b.configs, key=lambda c: FAMILY_ORDER.index(FAMILIES.get(c.name, "format")))
        )
        if _families_clash(configs):
            continue
        try:
            check_composition(list(configs))
        except ConfigError:
            continue
        pairs.append((ga * gb, Candidate(configs, "composition", f"{a.key} & {b.key}")))
    pairs.sort(key=lambda p: -p[0])
    return [c for _, c in pairs[:limit]]


def _families_clash(configs: tuple[PassConfig, ...]) -> bool:
    families = [FAMILIES.get(c.name, c.name) for c in configs]
    if any(c.label() in NEEDS_GGUF for c in configs):  # the file's blocks are of the unchanged model
        return True
    if any(c.name in FLOAT_ONLY for c in configs) and "format" in families:
        return True
    return len(families) != len(set(families))


def fallbacks(candidate: Candidate, sensitivity: dict[str, float]) -> list[Candidate]:
    """Variants that keep the most sensitive layers in higher precision, fewest kept first.

    The last pass of ``candidate`` that has an ``exclude`` field gets the top-1, top-10% and top-25%
    layers by measured sensitivity added to it (``lm_head`` is usually among the first).
    """
    idx = next(
        (i for i in reversed(range(len(candidate.configs))) if _keeps_layers(candidate.configs[i])), None
    )
    if idx is None or not sensitivity:
        return []

    target = candidate.configs[idx]
    ranked = [
        name
        for name, _ in sorted(sensitivity.items(), key=lambda kv: -kv[1])
        if not (target.exclude and matches(name, target.exclude))
    ]
    out: list[Candidate] = []
    seen: set[tuple[str, ...]] = set()
    for k in (1, math.ceil(0.10 * len(ranked)), math.ceil(0.25 * len(ranked))) if ranked else ():
        keep = tuple(dict.fromkeys([*target.exclude, *ranked[:k]]))
        if keep in seen or set(keep) == set(target.exclude):
            continue
        seen.add(keep)
        new = dataclasses.replace(target, exclude=keep)
        configs = candidate.configs[:idx] + (new,) + candidate.configs[idx + 1 :]
        out.append(Candidate(configs, "fallback", candidate.key))
    return out


def _keeps_layers(config: Any) -> bool:
    """Whether a pass can keep some layers at higher precision (an ``exclude`` field it honours)."""
    accepts = getattr(config, "accepts_exclude", None)
    return hasattr(config, "exclude") and (accepts is None or accepts())


_EXCLUDE = re.compile(r"exclude=([^,+\s]+)")


def short_key(key: str) -> str:
    """A candidate key with long ``exclude`` lists shortened to their length."""

    def shorten(m: re.Match[str]) -> str:
        names = m.group(1).split("|")
        return m.group(0) if len(names) <= 2 else f"exclude=<{len(names)} layers>"

    return _EXCLUDE.sub(shorten, key)


def profile_order(store: Any, cfg: Any, log: Any) -> tuple[list[str] | None, int | None]:
    """(order, profile run id): the latest stored profile of ``cfg.model`` at these threads gives its
    recommendations for the objective's phase, best first; without one (and without candidates named
    by the user) the host's stored peaks rank the weight formats (``host_order``). None when the
    objective has no phase or the user named the candidates."""
    wanted = OBJECTIVE_PHASE.get(cfg.objective)
    threads = cfg.threads or physical_cores()
    if wanted is None:
        return None, None
    for run in store.list_runs(limit=100, kind="profile"):
        r = run.result or {}
        if run.model == cfg.model and (r.get("threads") or {}).get("torch_num_threads") == threads:
            order = r["profile"]["diagnosis"].get("recommended_by_phase", {}).get(wanted)
            if order:
                log(f"candidate order from profile run {run.id}: {', '.join(order)} first")
                return order, run.id
    if cfg.candidates:
        return None, None
    order, why = host_order(stored_peaks(store, threads), cfg.objective)
    log(why)
    return order, None
