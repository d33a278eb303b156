"""llama.cpp's block formats computed from float weights, optionally weighted by activations.

ONNX Runtime's round-to-nearest 4-bit quantizer keeps zero inside every block's range and rounds its
zero point to an integer, so a block whose weights sit between 0.01 and 0.09 spends most of its 16
levels on values it never holds. llama.cpp's Q4_1 stores each block of 32 weights as
``w = d * q + m`` with a float minimum ``m``: all 16 levels fall inside the block's range. Its
reference quantizer (``gguf.quants``, maintained with llama.cpp) takes the block's min and max.

With an *importance* per input channel (the mean square of the activations that channel carries on
calibration text: llama.cpp's "imatrix"), each Q4_1 block is searched instead: a few shrunken ranges
are tried, each refined by least squares for ``d`` and ``m`` under the importance weights, and the
one with the smallest weighted error (what the layer's output actually feels) is kept. The result is
written as Q4_1 block bytes, so ``sources.gguf_blocks`` turns it into ``MatMulNBits`` inputs exactly as
it does a GGUF file's own blocks.
"""

from __future__ import annotations

from typing import Any

import gguf
import numpy as np
import torch

from unbottle.data import CALIBRATION_TEXT, packaged_text  # calibration: not the evaluation text
from unbottle.sources import gguf_blocks as gb

FORMATS = ("q4_0", "q4_1", "q5_1", "q8_0")
BLOCK = 32
# shrink of the block's range from below and from above, as fractions of it (0, 0: min-max)
_SHRINKS = [(a, b) for a in (0.0, 0.04, 0.1) for b in (0.0, 0.04, 0.1)]


def quantize(weight: np.ndarray, fmt: str, importance: np.ndarray | None = None) -> gb.NBitsWeight:
    """``weight`` (N, K) float as ``fmt`` blocks along K; ``importance`` (K,) weights the Q4_1 search.

    Raises:
        ValueError: an unknown format, or K not a multiple of 32.
    """
    if fmt not in FORMATS:
        raise ValueError(f"block format {fmt!r} given; allowed: {', '.join(FORMATS)}")
    w = np.ascontiguousarray(weight, np.float32)
    if w.ndim != 2 or w.shape[1] % BLOCK:
        raise ValueError(f"a weight of shape {w.shape} has no whole blocks of {BLOCK} input features")
    qtype = gguf.GGMLQuantizationType[fmt.upper()]
    if fmt == "q4_1" and importance is not None:
        raw = _searched_q4_1(w, np.asarray(importance, np.float64))
    else:
        raw = gguf.quants.quantize(w, qtype)
    return gb.blocks_to_nbits(raw, qtype)


def _searched_q4_1(w: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """Q4_1 block bytes (N, K/32*20) minimising the importance-weighted squared error per block."""
    n, k = w.shape
    x = w.reshape(n, k // BLOCK, BLOCK).astype(np.float64)  # (N, G, 32)
    imp = np.maximum(importance.reshape(1, k // BLOCK, BLOCK), 1e-12 * importance.max(initial=1.0))
    lo, hi = x.min(axis=2), x.max(axis=2)  # (N, G)
    best = (np.full(lo.shape, np.inf), np.zeros_like(lo), lo.copy())  # (error, d, m)
    for a, b in _SHRINKS:
        span = hi - lo
        d, m = _refined(x, imp, lo + a * span, hi - b * span)
        err = _error(x, imp, d, m)
        better = err < best[0]
        best = tuple(np.where(better, new, old) for new, old in zip((err, d, m), best, strict=True))
    _, d, m = best
    d16, m16 = d.astype(np.float16), m.astype(np.float16)
    q = _codes(x, d16.astype(np.float64), m16.astype(np.float64))  # (N, G, 32)
    return _q4_1_bytes(d16, m16, q)


def _codes(x: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d[..., None] > 0, np.rint((x - m[..., None]) / d[..., None]), 0)
    return np.clip(q, 0, 15)


def _refined(x: np.ndarray, imp: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """(d, m) of the range [lo, hi], then re-fitted by weighted least squares on its codes."""
    d = np.maximum(hi - lo, 0) / 15
    q = _codes(x, d, lo)
    sw, sq, sqq = imp.sum(-1), (imp * q).sum(-1), (imp * q * q).sum(-1)
    sx, sqx = (imp * x).sum(-1), (imp * q * x).sum(-1)
    det = sw * sqq - sq * sq
    ok = det > 1e-12 * np.maximum(sw * sqq, 1e-30)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_fit = np.where(ok, (sw * sqx - sq * sx) / det, d)
        m_fit = np.where(ok, (sqq * sx - sq * sqx) / det, lo)
    keep = ok & (d_fit > 0)
    return np.where(keep, d_fit, d), np.where(keep, m_fit, lo)


def _error(x: np.ndarray, imp: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    q = _codes(x, d, m)
    return (imp * (q * d[..., None] + m[..., None] - x) ** 2).sum(-1)


def _q4_1_bytes(d: np.ndarray, m: np.ndarray, q: np.ndarray) -> np.ndarray:
    """llama.cpp's block_q4_1: fp16 d, fp16 m, 16 bytes holding q[j] | q[j + 16] << 4."""
    n, g = d.shape
    codes = q.astype(np.uint8)
    packed = codes[..., :16] | (codes[..., 16:] << 4)  # (N, G, 16)
    head = np.stack([d, m], axis=-1).view(np.uint8).reshape(n, g, 4)
    return np.concatenate([head, packed], axis=-1).reshape(n, g * 20)


def activation_importance(
    model: Any, tokenizer: Any, tokens: int = 2048, window: int = 512
) -> dict[str, Any]:
    """Mean square of every ``nn.Linear``'s input per channel on calibration text (llama.cpp's
    imatrix), keyed by module name; ``tokens`` of the packaged ``CALIBRATION_TEXT``, never the text
    perplexity is evaluated on, so a guard checked afterwards is not judged on what tuned it.

    Without a tokenizer the text can't be read: random token ids stand in (and the caller says so).
    """
    ids = _calibration_ids(tokenizer, model.config.vocab_size, tokens)
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        return record

    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in linears.items()]
    try:
        with torch.inference_mode():
            for start in range(0, len(ids), window):
                chunk = torch.tensor(ids[start : start + window])[None]
                model(input_ids=chunk, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: (sums[n] / counts[n]).double().numpy() for n in sums}


def _calibration_ids(tokenizer: Any, vocab: int, tokens: int) -> list[int]:
    if tokenizer is None:
        return np.random.default_rng(0).integers(0, vocab, tokens).tolist()
    text = packaged_text(CALIBRATION_TEXT)
    ids = tokenizer(text[: tokens * 8], add_special_tokens=False)["input_ids"][:tokens]
    return [i for i in ids if i < vocab]
