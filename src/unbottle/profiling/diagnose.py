"""Findings: each phase's bound, what it costs per request, and the passes that attack it.

A finding's cost is the time the phase spends above its roofline for one request (a prompt of the
profiled length, then the profiled number of decoded tokens). Each recommendation carries a gain
estimated from the measurements: the weight-bytes ratio for memory-bound phases (capped by the
ceiling), the ratio of measured matmul peaks for compute-bound ones, the kernel fraction for
overhead-bound ones. ``recommended_candidates`` orders ``unbottle optimize``'s first round.
"""

from __future__ import annotations

from typing import Any

from unbottle.profiling.roofline import BYTES_PER_PARAM

# What attacks a memory-bound phase: candidate → the weight format it stores.
WEIGHT_FORMAT_CANDIDATES = {
    "genai:weights=gguf": "int4",
    "genai:precision=int8": "int8",
    "onnx:quantize=int8-block": "int8",
    "wo-int8": "int8",
    "wo-int4:group_size=32": "int4",
}
MIN_PEAK_RATIO = 1.3  # a lower-precision matmul must measure this much faster than fp32 to be recommended
# A weight format must read this many times fewer bytes per parameter than the model does now, its
# layout's scales and offsets included: an int4 build in ONNX Runtime reads ~0.9 B/param (1.4x the
# nominal 0.625), which must not read as room for int4.
MIN_BYTES_GAIN = 1.5


def diagnose(
    rows: dict[str, dict[str, Any]],
    groups: dict[str, dict[str, float]],
    peaks: Any,
    ceilings: dict[str, float],
    request: dict[str, int],
    ceiling_bandwidths: dict[str, dict[str, Any]] | None = None,
    engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ranked findings and the candidate order they imply.

    Args:
        rows: roofline row per phase (``prefill``, ``decode``).
        groups: seconds per module group per phase (profiled).
        peaks: the ``Peaks`` in force.
        ceilings: decode tokens/s ceilings per weight format.
        request: ``{"prompt_tokens": ..., "new_tokens": ...}`` the costs are scaled to.
        ceiling_bandwidths: ``decode_ceiling_bandwidths``, so the text names the formats whose
            ceiling assumes cache bandwidth (None: not said).
        engine: ``graph_ceiling.measure_ceiling`` for a graph model (None: a torch model).
    """
    findings = []
    for phase, row in rows.items():
        scale = 1.0 if phase == "prefill" else request["new_tokens"] / row["tokens"]
        cost = row["above_roofline_s"] * scale
        recs = _recommend(phase, row, peaks, ceilings)
        findings.append(
            {
                "phase": phase,
                "bound": row["bound"],
                "cost_s": cost,
                "text": _text(phase, row, ceilings, ceiling_bandwidths or {}),
                "recommendations": recs,
            }
        )
        findings += _group_findings(phase, groups.get(phase, {}), row, scale)
    if engine is not None and "decode" in rows:
        findings.append(_engine_finding(engine, rows["decode"], request["new_tokens"]))
    findings.sort(key=lambda f: -f["cost_s"])
    by_phase = {phase: _order([f for f in findings if f["phase"] == phase]) for phase in rows}
    return {
        "findings": findings,
        "recommended_candidates": _order(findings),
        "recommended_by_phase": by_phase,
    }


def _text(
    phase: str, row: dict[str, Any], ceilings: dict[str, float], bandwidths: dict[str, dict[str, Any]]
) -> str:
    share = f"{row['overhead_fraction']:.0%} of wall time outside kernels"
    if row["bound"] == "overhead-bound":
        return f"{phase} is overhead-bound: {share} (dispatch, Python, small un-fused ops)"
    if row["bound"] == "memory-bound":
        which = {"cache": "cache ", "dram": "DRAM "}.get(row.get("bandwidth", ""), "")
        text = (
            f"{phase} is memory-bound: {row['mbu']:.0%} of measured {which}bandwidth used (MBU), "
            f"{row['intensity']:.1f} FLOP/byte below the ridge at {row['ridge']:.1f}"
        )
        if row.get("bandwidth") == "cache":
            text += (
                f"; its {row['step_bytes'] / 2**20:.0f} MiB read per step fit in the last-level cache, "
                "so it is judged against cache bandwidth, not DRAM"
            )
        if phase == "decode":
            text += f"; ceiling {ceilings['float32']:.0f} tok/s at fp32, {ceilings['int8']:.0f} at int8, "
            text += f"{ceilings['int4']:.0f} at int4"
            cached = [
                f for f in ("float32", "int8", "int4") if bandwidths.get(f, {}).get("bandwidth") == "cache"
            ]
            if cached:
                text += (
                    f" ({', '.join(cached)} at cache bandwidth: those weights fit in the last-level cache)"
                )
        return text
    return (
        f"{phase} is compute-bound: {row['mfu']:.0%} of measured matmul peak (MFU), "
        f"{row['intensity']:.0f} FLOP/byte above the ridge at {row['ridge']:.1f}"
    )


def _engine_finding(engine: dict[str, Any], row: dict[str, Any], new_tokens: int) -> dict[str, Any]:
    """How a graph model's decode step splits: its weight kernels, the graph around them, the loop."""
    wall, step, alone = engine["wall_s_per_token"], engine["step_s"], engine["weights_s"]
    share = engine["weights_gbps"] / row["bandwidth_gbps"]
    text = (
        f"decode takes {wall * 1e3:.1f} ms per token; this engine's weight kernels alone take "
        f"{alone * 1e3:.1f} ms ({engine['weights_gbps']:.1f} GB/s, {share:.0%} of the measured "
        f"{row['bandwidth']} bandwidth): at most {engine['tokens_per_s_ceiling']:.0f} tok/s from this "
        f"engine on this host. The graph around them adds {max(step - alone, 0) * 1e3:.1f} ms "
        f"(attention, norms, small ops, the executor), the loop outside the graph "
        f"{max(wall - step, 0) * 1e3:.1f} ms"
    )
    if share < 0.5:
        text += "; the kernels, not the bytes, are the limit: a faster engine, not smaller weights, helps"
    return {
        "phase": "decode",
        "bound": row["bound"],
        "cost_s": max(wall - alone, 0.0) * new_tokens,
        "text": text,
        "recommendations": [],
    }


def _recommend(
    phase: str, row: dict[str, Any], peaks: Any, ceilings: dict[str, float]
) -> list[dict[str, Any]]:
    if row["bound"] == "overhead-bound":
        if row.get("engine") == "onnxruntime":  # already one graph: the engine finding says what is left
            return []
        gain = 1 / max(1 - row["overhead_fraction"], 0.05)
        return [
            {
                "candidate": "compile",
                "why": "fuses ops and removes Python dispatch (static KV cache)",
                "gain": gain,
            },
            {
                "candidate": "onnx",
                "why": "one graph run by ONNX Runtime: no Python between ops",
                "gain": gain,
            },
        ]
    if row["bound"] == "memory-bound":
        current = row["tokens_per_s"]
        out = []
        for cand, fmt in WEIGHT_FORMAT_CANDIDATES.items():
            bytes_gain = row.get("bytes_per_param", BYTES_PER_PARAM["float32"]) / BYTES_PER_PARAM[fmt]
            if bytes_gain < MIN_BYTES_GAIN:  # the weights are already this small (a quantized model)
                continue
            cap = ceilings[fmt] / current if phase == "decode" else bytes_gain
            out.append(
                {
                    "candidate": cand,
                    "why": f"{fmt} weights: {bytes_gain:.1f}x fewer bytes per token",
                    "gain": min(bytes_gain, cap),
                }
            )
        return out
    return compute_recommendations(peaks)


def compute_recommendations(peaks: Any) -> list[dict[str, Any]]:
    """What attacks a compute-bound phase: lower-precision matmuls that measured ≥ 1.3× fp32 here."""
    flops = peaks.matmul_gflops
    out = []
    if flops.get("bfloat16", 0) > MIN_PEAK_RATIO * flops["float32"]:
        out.append(
            {
                "candidate": "precision",
                "why": f"bf16 matmuls measured {flops['bfloat16'] / flops['float32']:.1f}x fp32",
                "gain": flops["bfloat16"] / flops["float32"],
            }
        )
    if flops.get("int8", 0) > MIN_PEAK_RATIO * flops["float32"]:
        out.append(
            {
                "candidate": "static-int8",
                "why": f"int8 matmuls measured {flops['int8'] / flops['float32']:.1f}x fp32 "
                "(check accuracy: activation outliers)",
                "gain": flops["int8"] / flops["float32"],
            }
        )
    return out


def _group_findings(
    phase: str, groups: dict[str, float], row: dict[str, Any], scale: float
) -> list[dict[str, Any]]:
    """Module groups that take a large share of a phase (informational, costed by their share)."""
    total = sum(groups.values())
    out = []
    for group, seconds in groups.items():
        share = seconds / total if total else 0.0
        if share >= 0.25 and group != "other":
            out.append(
                {
                    "phase": phase,
                    "bound": row["bound"],
                    "cost_s": 0.0,
                    "text": f"{group} takes {share:.0%} of {phase} time",
                    "recommendations": [],
                }
            )
        elif group == "other" and share >= 0.15:
            out.append(
                {
                    "phase": phase,
                    "bound": row["bound"],
                    "cost_s": 0.0,
                    "text": f"{share:.0%} of {phase} time is outside the model's modules "
                    "(sampling, cache bookkeeping, Python)",
                    "recommendations": [],
                }
            )
    return out


def _order(findings: list[dict[str, Any]]) -> list[str]:
    """Candidates by the time they are estimated to save per request."""
    saving: dict[str, float] = {}
    for f in findings:
        for r in f["recommendations"]:
            saving[r["candidate"]] = saving.get(r["candidate"], 0.0) + f["cost_s"] * (
                1 - 1 / max(r["gain"], 1.0)
            )
    return [c for c, _ in sorted(saving.items(), key=lambda kv: -kv[1])]
