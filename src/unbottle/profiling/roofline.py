"""Roofline and diagnosis: how far each phase is from the machine's limits, and why.

FLOPs are counted analytically from the model's shapes (2 per multiply-add of every ``nn.Linear`` and
of attention's two products), not read from the profiler, which misses fused kernels; the profiler's
count is reported beside it. Bytes are the weights each forward reads plus the KV cache it reads.

Which bandwidth a phase is judged against depends on its working set, the bytes one step reads
(weights plus KV cache): when they fit in the last-level cache they are served from it, and MBU
against DRAM would read above 100% (a 268 MB model on a 300 MiB L3), so such a phase is judged against
the measured cache bandwidth and its row says so (``bandwidth``: ``cache`` or ``dram``).

A phase is **overhead-bound** when most of its wall time is outside the leaf kernels (dispatch,
Python, small un-fused ops); otherwise **memory-bound** when its arithmetic intensity (FLOPs per
byte) is below the machine's ridge point (at the bandwidth it meets), else **compute-bound**.
"""

from __future__ import annotations

from typing import Any

from unbottle.passes.base import linear_layers

OVERHEAD_BOUND = 0.5  # fraction of wall time outside kernels
BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0 + 4 / 32, "int4": 0.5 + 4 / 32}


def linear_macs(model: Any) -> int:
    """Multiply-adds per token of every ``nn.Linear`` (tied weights counted where they are used).

    A model run as one graph has no modules to count: its matmuls use every parameter once per token,
    except an untied input embedding, which is only gathered from.
    """
    layers = linear_layers(model)
    if layers or not hasattr(model, "n_parameters"):
        return sum(m.in_features * m.out_features for m in layers.values())
    cfg = model.config.get_text_config(decoder=True)
    gathered = 0 if getattr(cfg, "tie_word_embeddings", False) else cfg.vocab_size * cfg.hidden_size
    return max(int(model.n_parameters) - gathered, 0)


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
    """FLOPs and bytes of a window: ``tokens`` new tokens attending to ``context`` earlier ones.

    Returns:
        ``{"flops", "bytes"}`` of the whole window and ``"step_bytes"``: what one forward reads
        (weights plus the KV cache it attends to), the working set that decides cache residency.
    """
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
    step_bytes = weight_bytes + kv_bytes / reads
    return {"flops": float(flops), "bytes": float(weight_bytes * reads + kv_bytes), "step_bytes": step_bytes}


def roofline(profile: Any, work: dict[str, float], peaks: Any, dtype: str, tokens: int) -> dict[str, Any]:
    """Achieved FLOP/s and bytes/s, MFU, MBU, arithmetic intensity and the bound of one phase.

    Args:
        profile: the phase's ``PhaseProfile`` (wall time, share outside kernels).
        work: ``phase_work``'s FLOPs and bytes; ``step_bytes`` (default: all ``bytes``, one step)
            chooses the bandwidth: cache when it fits in the last-level cache, else DRAM.
        peaks: the ``Peaks`` in force.
        dtype: the weights' dtype, whose matmul peak MFU is measured against.
        tokens: tokens the window processed.

    Returns:
        The row: rates, ``mfu``, ``mbu`` and ``ridge`` against ``bandwidth`` (``"cache"`` or
        ``"dram"``, at ``bandwidth_gbps``), ``step_bytes``, ``cache_resident`` (None: cache size
        unknown), ``bound`` and the time above the roofline.
    """
    wall = profile.wall_s
    peak_flops = peaks.matmul_gflops.get(dtype) or peaks.matmul_gflops["float32"]
    step_bytes = work.get("step_bytes", work["bytes"])
    which, bandwidth = peaks.bandwidth_for(step_bytes)
    achieved_flops = work["flops"] / wall / 1e9
    achieved_bw = work["bytes"] / wall / 1e9
    intensity = work["flops"] / work["bytes"] if work["bytes"] else float("inf")
    ridge = peak_flops / bandwidth
    if profile.overhead_fraction > OVERHEAD_BOUND:
        bound = "overhead-bound"
    elif intensity < ridge:
        bound = "memory-bound"
    else:
        bound = "compute-bound"
    ideal = max(work["flops"] / (peak_flops * 1e9), work["bytes"] / (bandwidth * 1e9))
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
        "mbu": achieved_bw / bandwidth,
        "bandwidth": which,
        "bandwidth_gbps": bandwidth,
        "step_bytes": step_bytes,
        "cache_resident": peaks.cache_resident(step_bytes),
        "overhead_fraction": profile.overhead_fraction,
        "bound": bound,
        "ideal_s": ideal,
        "above_roofline_s": max(0.0, wall - ideal),
    }


def decode_ceilings(params: int, other_bytes_per_token: float, peaks: Any) -> dict[str, float]:
    """Tokens/s if decoding read only its weights (and KV cache) at full bandwidth, per weight format.

    Each format meets the bandwidth its bytes per token fit (``decode_ceiling_bandwidths``): a format
    small enough for the last-level cache is read at cache bandwidth.
    """
    return {
        fmt: basis["gbps"] * 1e9 / basis["bytes_per_token"]
        for fmt, basis in decode_ceiling_bandwidths(params, other_bytes_per_token, peaks).items()
    }


def decode_ceiling_bandwidths(
    params: int, other_bytes_per_token: float, peaks: Any
) -> dict[str, dict[str, Any]]:
    """Per weight format: bytes read per decoded token and the bandwidth (``cache``/``dram``) they meet."""
    out = {}
    for fmt, per in BYTES_PER_PARAM.items():
        nbytes = params * per + other_bytes_per_token
        which, gbps = peaks.bandwidth_for(nbytes)
        out[fmt] = {"bytes_per_token": nbytes, "bandwidth": which, "gbps": gbps}
    return out


def format_decode_gain(
    peaks: Any, fmt: str, compute_dtype: str = "float32", weight_bytes: float | None = None
) -> float:
    """Expected batch-1 decode speed-up of storing fp32 weights as ``fmt``, from the measured peaks.

    Per weight and token, a step takes the longer of reading the weight's bytes (at the bandwidth
    that many bytes meet: cache when they fit in the last-level cache) and its 2 FLOPs at the
    ``compute_dtype`` matmul peak; the gain is fp32's time over ``fmt``'s — the bytes ratio, unless the
    peaks say compute or the cache caps it. An upper bound: kernels that unpack more per byte reach less.

    Args:
        peaks: the ``Peaks`` in force.
        fmt: a key of ``BYTES_PER_PARAM``.
        compute_dtype: the dtype the format's kernel multiplies in (a ``matmul_gflops`` key; fp32 when
            that one was not measured).
        weight_bytes: the model's fp32 weight bytes; None: assume they do not fit in any cache.
    """
    params = weight_bytes / BYTES_PER_PARAM["float32"] if weight_bytes else None

    def per_weight_ns(per: float, dtype: str) -> float:
        gbps = peaks.bandwidth_for(params * per)[1] if params else peaks.bandwidth_gbps
        gflops = peaks.matmul_gflops.get(dtype) or peaks.matmul_gflops["float32"]
        return max(per / gbps, 2 / gflops)

    return per_weight_ns(BYTES_PER_PARAM["float32"], "float32") / per_weight_ns(
        BYTES_PER_PARAM[fmt], compute_dtype
    )
