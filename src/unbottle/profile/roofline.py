"""Roofline and diagnosis: how far each phase is from the machine's limits, and why.

FLOPs are counted analytically from the model's shapes (2 per multiply-add of every ``nn.Linear`` and
of attention's two products), not read from the profiler, which misses fused kernels; the profiler's
count is reported beside it. Bytes are the weights each forward reads plus the KV cache it reads.

A phase is **overhead-bound** when most of its wall time is outside the leaf kernels (dispatch,
Python, small un-fused ops); otherwise **memory-bound** when its arithmetic intensity (FLOPs per
byte) is below the machine's ridge point, else **compute-bound**.
"""

from __future__ import annotations

from typing import Any

OVERHEAD_BOUND = 0.5  # fraction of wall time outside kernels
BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0 + 4 / 32, "int4": 0.5 + 4 / 32}


def linear_macs(model: Any) -> int:
    """Multiply-adds per token of every ``nn.Linear`` (tied weights counted where they are used)."""
    from unbottle.passes.base import linear_layers

    return sum(m.in_features * m.out_features for m in linear_layers(model).values())


def attention_shape(model: Any) -> tuple[int, int, int]:
    """(layers, hidden size, KV width = kv heads × head dim) from the model's config."""
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    hidden = getattr(cfg, "hidden_size", 0) or 0
    heads = getattr(cfg, "num_attention_heads", 1) or 1
    kv_heads = getattr(cfg, "num_key_value_heads", heads) or heads
    head_dim = getattr(cfg, "head_dim", None) or (hidden // heads if heads else 0)
    return layers, hidden, kv_heads * head_dim


def phase_work(model: Any, phase: str, tokens: int, context: int, weight_bytes: int) -> dict[str, float]:
    """FLOPs and bytes of a window: ``tokens`` new tokens attending to ``context`` earlier ones."""
    layers, hidden, kv_width = attention_shape(model)
    macs = linear_macs(model)
    if phase == "prefill":
        attended = context + (tokens + 1) / 2  # causal: token i sees i earlier ones
        reads = 1  # weights read once for the whole prompt
    else:
        attended = context + tokens / 2
        reads = tokens  # one forward per decoded token
    head = getattr(model, "lm_head", None)
    head_macs = head.in_features * head.out_features if hasattr(head, "in_features") else 0
    logit_rows = 1 if phase == "prefill" else tokens  # prefill keeps only the last position's logits
    flops = (
        2 * (macs - head_macs) * tokens + 2 * head_macs * logit_rows + 4 * layers * hidden * attended * tokens
    )
    kv_bytes = 2 * layers * kv_width * attended * 4 * (tokens if phase == "decode" else 1)
    return {"flops": float(flops), "bytes": float(weight_bytes * reads + kv_bytes)}


def roofline(profile: Any, work: dict[str, float], peaks: Any, dtype: str, tokens: int) -> dict[str, Any]:
    """Achieved FLOP/s and bytes/s, MFU, MBU, arithmetic intensity and the bound of one phase."""
    wall = profile.wall_s
    peak_flops = peaks.matmul_gflops.get(dtype) or peaks.matmul_gflops["float32"]
    achieved_flops = work["flops"] / wall / 1e9
    achieved_bw = work["bytes"] / wall / 1e9
    intensity = work["flops"] / work["bytes"] if work["bytes"] else float("inf")
    ridge = peak_flops / peaks.bandwidth_gbps
    if profile.overhead_fraction > OVERHEAD_BOUND:
        bound = "overhead-bound"
    elif intensity < ridge:
        bound = "memory-bound"
    else:
        bound = "compute-bound"
    ideal = max(work["flops"] / (peak_flops * 1e9), work["bytes"] / (peaks.bandwidth_gbps * 1e9))
    return {
        "phase": profile.phase,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "gflops": work["flops"] / 1e9,
        "gbytes": work["bytes"] / 1e9,
        "achieved_gflops": achieved_flops,
        "achieved_gbps": achieved_bw,
        "intensity": intensity,
        "ridge": ridge,
        "mfu": achieved_flops / peak_flops,
        "mbu": achieved_bw / peaks.bandwidth_gbps,
        "overhead_fraction": profile.overhead_fraction,
        "bound": bound,
        "ideal_s": ideal,
        "above_roofline_s": max(0.0, wall - ideal),
    }


def decode_ceilings(params: int, other_bytes_per_token: float, peaks: Any) -> dict[str, float]:
    """Tokens/s if decoding read only its weights (and KV cache) at full bandwidth, per weight format."""
    return {
        fmt: peaks.bandwidth_gbps * 1e9 / (params * per + other_bytes_per_token)
        for fmt, per in BYTES_PER_PARAM.items()
    }
