"""The few numbers a user reads first, derived from the raw measurements of a bench run.

Used by ``unbottle bench --json`` and ``unbottle runs show``; it only reads medians and CIs that
``unbottle.stats`` derives from the stored samples, so a rebuilt headline matches the original.
"""

from __future__ import annotations

from typing import Any

from unbottle.core.measurement import Measurement
from unbottle.stats import summarize


def _stat(m: Measurement) -> dict[str, float]:
    s = summarize(m.samples)
    return {"p50": s.p50, "p90": s.p90, "p99": s.p99, "ci95": [s.ci_low, s.ci_high]}


def headline(measurements: list[Measurement]) -> dict[str, Any]:
    """Decode tokens/s, token latency percentiles, TTFT, prefill tokens/s, peak memory, and per serve
    rate (only when served) the time to first token, time per output token, throughput and goodput; for
    an encoder, sequences/s and latency per batch size and sequence length."""
    by = {(m.name, tuple(sorted(m.params.items()))): m for m in measurements}
    out: dict[str, Any] = {"decode": [], "prefill": [], "generate": []}
    for (name, key), m in by.items():
        params = dict(key)
        if name == "decode.tokens_per_s":
            lat = by.get(("decode.token_latency", key))
            ttft = by.get(("decode.ttft", key))
            out["decode"].append(
                {
                    "batch_size": params["batch_size"],
                    "tokens_per_s": _stat(m),
                    "token_latency_s": _stat(lat) if lat else None,
                    "ttft_s": _stat(ttft) if ttft else None,
                }
            )
        elif name == "prefill.tokens_per_s":
            lat = by.get(("prefill.latency", key))
            out["prefill"].append(
                {
                    "prompt_length": params["prompt_length"],
                    "tokens_per_s": _stat(m),
                    "latency_s": _stat(lat) if lat else None,
                }
            )
        elif name == "generate.tokens_per_s":
            out["generate"].append({"batch_size": params["batch_size"], "tokens_per_s": _stat(m)})
        elif name == "encode.sequences_per_s":
            lat = by.get(("encode.latency", key))
            out.setdefault("encode", []).append(
                {**params, "sequences_per_s": _stat(m), "latency_s": _stat(lat) if lat else None}
            )
        elif name == "serve.goodput":
            out.setdefault("serve", []).append(_serve(by, key, params["rate"]))
    peaks = [m.samples[0] for m in measurements if m.name == "memory.peak_rss"]
    out["peak_rss_mib"] = max(peaks) if peaks else None
    return out


def _serve(by: dict[Any, Measurement], key: Any, rate: float) -> dict[str, Any]:
    def get(metric: str) -> Measurement | None:
        return by.get((f"serve.{metric}", key))

    ttft, tpot = get("ttft"), get("tpot")
    return {
        "rate": rate,
        "ttft_s": _stat(ttft) if ttft else None,
        "tpot_s": _stat(tpot) if tpot else None,
        **{k: m.samples[0] for k in ("throughput", "goodput", "completed") if (m := get(k)) is not None},
    }
