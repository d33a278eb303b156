"""Why a candidate was slower or broke the guard, from what was measured about it and this machine.

Each reason is a fact the trial or the machine manifest shows (a missing CPU instruction, weight bytes
that did not shrink, tensor subclasses run without compilation, graph ops left in float, the layers
whose quantization error is largest), not a guess about the code.
"""

from __future__ import annotations

from typing import Any

from unbottle.core.env import cpu_info

TORCHAO_SUBCLASS = {"wo-int4", "static-int8"}


def explain(
    trial: dict[str, Any],
    slower: bool,
    broke: bool,
    sensitivity: dict[str, float] | None,
    base: dict[str, Any] | None = None,
) -> list[str]:
    """Reasons for one trial's outcome (empty when it helped and kept the guard)."""
    if trial["status"] != "ok":
        return [trial.get("reason") or trial["status"]]
    result = trial["result"]
    names = [p["name"] for p in trial["candidate"]["passes"]]
    reasons: list[str] = []
    if slower:
        reasons += _overhead_bound(base or {})
        encoder = ((base or {}).get("model") or {}).get("task", "causal-lm") != "causal-lm"
        reasons += _slower(names, trial["candidate"]["passes"], result, encoder)
    if broke:
        reasons += _broke(result, sensitivity)
    return reasons


def _slower(
    names: list[str], passes: list[dict[str, Any]], result: dict[str, Any], encoder: bool = False
) -> list[str]:
    """``encoder``: an encoder's batch, bound by arithmetic rather than weight bytes."""
    flags = cpu_info().get("flags", {})
    out = []
    size = result["comparisons"].get("size.weights")
    if size and size["pct"]["point"] > -10 and not encoder:
        out.append(
            f"weight bytes read per token barely changed ({size['a']['point']:.0f} → "
            f"{size['b']['point']:.0f} MiB); batch-1 decoding is bound by those bytes"
        )
    vnni = flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8")
    if {"dynamic-int8", "static-int8"} & set(names):
        out.append(
            "int8 activations are quantized at run time on every call; "
            + (
                "here that overhead outweighs the int8 GEMM"
                if encoder
                else "at batch 1 that overhead outweighs the int8 GEMM"
            )
            + ("" if vnni else ", and this CPU lacks VNNI, so the int8 GEMM itself falls back to slower code")
        )
    if "precision" in names and not (flags.get("avx512_bf16") or flags.get("amx_bf16")):
        out.append("this CPU lacks AVX512_BF16: bf16 matmuls are converted in software")
    torchao = any(p["name"] in TORCHAO_SUBCLASS or (p.get("backend") == "torchao") for p in passes)
    if torchao and "compile" not in names:
        out.append("torchao tensor subclasses run un-compiled: each op goes through Python dispatch")
    if "prune" in names:
        out.append("unstructured zeros are still multiplied: dense kernels don't skip them")
    if "compile" in names and not encoder:
        out.append("compilation removes Python overhead, not weight bytes, and decoding is memory-bound")
    out += _graph_notes(passes, result)
    return out or ["no cause measured: the kernels this candidate uses are not faster on this machine"]


def _overhead_bound(base: dict[str, Any]) -> list[str]:
    """Decoding that reads its weights far slower than any memory can is bound by per-op overhead."""
    tps = (base.get("rates") or {}).get("decode.tokens_per_s")
    mib = base.get("weights_mib")
    if not tps or not mib:
        return []
    gbps = mib * 2**20 * tps / 1e9
    if gbps >= 1.0:
        return []
    return [
        f"the baseline reads its {mib:.1f} MiB of weights {tps:.0f} times a second ({gbps:.2f} GB/s), far "
        "below memory bandwidth: decoding time goes to per-op overhead, which fewer weight bytes don't cut "
        "and extra (de)quantize ops add to"
    ]


def _graph_notes(passes: list[dict[str, Any]], result: dict[str, Any]) -> list[str]:
    """ONNX: matmuls left in float after quantization."""
    onnx = next((p for p in passes if p["name"] == "onnx"), None)
    if onnx is None or onnx.get("quantize", "none") == "none":
        return []
    for report in result.get("reports", []):
        for note in report.get("notes", []):
            if "matmuls:" in note and "MatMul=" in note:
                return [
                    f"the export kept float MatMul ops after quantization ({note.split('matmuls: ')[-1]})"
                ]
    return []


def _broke(result: dict[str, Any], sensitivity: dict[str, float] | None) -> list[str]:
    out = []
    ppl = result["comparisons"].get("perplexity")
    if ppl:
        out.append(f"perplexity changed {ppl['pct']['point']:+.2f}% on the screening text")
    acc = result["comparisons"].get("accuracy")
    if acc:
        out.append(f"task accuracy changed {acc['diff']['point']:+.1f} points")
    cos = result["comparisons"].get("embedding_cosine")
    if cos:
        out.append(f"embedding cosine to the float model's {cos['b']['point']:.4f} on the screening text")
    if sensitivity:
        top = sorted(sensitivity.items(), key=lambda kv: -kv[1])[:3]
        out.append(
            "largest quantization error (relative output MSE): "
            + ", ".join(f"{name} {err:.1e}" for name, err in top)
        )
    return out
