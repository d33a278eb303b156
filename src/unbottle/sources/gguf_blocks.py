"""GGUF quantized blocks as ONNX Runtime block-quantized weights, without re-quantizing.

Dequantizing a GGUF file to fp32 and quantizing again with ONNX Runtime's round-to-nearest quantizer
moves every weight off the grid llama.cpp chose for it (+20-28% perplexity at 4 bits). Every GGUF block
format here is ``w = (q - zp) * scale (+ offset)`` per block along the input dimension K, which is what
``com.microsoft.MatMulNBits`` (and, for embeddings, ``GatherBlockQuantized``) compute, so the codes and
scales move over unchanged: pure numpy on the memory-mapped block bytes.

Exactness. GGUF scales are an fp16 ``d`` (or ``d`` times a 6-bit / int8 sub-block scale: at most 19
significant bits), so the float32 scales here are exact (fp16 scales would not be, for Q4_K and Q6_K).
Formats without a minimum (Q4_0, Q5_0, Q6_K, Q8_0) dequantize bit-for-bit like
``gguf.quants.dequantize``; their codes are shifted onto the op's default zero point, so the
zero-point input is left out. Formats with a minimum (Q4_1, Q5_1, Q4_K: ``w = d*q + m``) come in two
forms:

* ``"offset"`` (default): MatMulNBits on centred codes, ``(q - 8) * d`` (exact), plus per-block
  ``offsets`` = m + 8d (exact; checked per block), which a graph adds as ``blocksum(x) @ offsets.T``
  (a (K/32 x N) fp32 MatMul). Bit-exact, and it runs on ORT's packed int8 kernel.
* ``"float_zero_point"``: one MatMulNBits with float zp = -m/d, as ORT's HQQ quantizer emits; equal up
  to float32 rounding. ORT's CPU kernel (1.32) does not prepack float zero points: it dequantizes the
  whole weight on every call (20-50x slower at 4 bits, either accuracy level), and it refuses them at
  8 bits (Q5_1).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import gguf
import numpy as np
from gguf.quants import Q4_K

from unbottle.core.errors import ConfigError, ModelLoadError

Affine = Literal["float_zero_point", "offset"]
AFFINE_FORMS: tuple[str, ...] = ("float_zero_point", "offset")

_F16 = np.dtype("<f2")


@dataclasses.dataclass(frozen=True)
class NBitsWeight:
    """One weight matrix W (N out x K in) as MatMulNBits inputs.

    ``W[n, k] = (q[n, k] - zp[n, j]) * scales[n, j] + offsets[n, j]`` with ``j = k // block_size``.

    Attributes:
        qtype: the GGUF type the blocks came from (``"Q4_1"``, ...).
        bits: 4 or 8, the MatMulNBits ``bits`` attribute.
        block_size: the MatMulNBits ``block_size`` attribute (16 or 32).
        b: uint8 (N, K / block_size, block_size * bits / 8), codes packed low-nibble first.
        scales: float32 (N, K / block_size).
        zero_points: None (the op's default 2**(bits-1)), uint8 packed like ``b``
            (N, ceil(K / block_size * bits / 8)), or float32 (N, K / block_size).
        offsets: float32 (N, K / block_size) in the ``"offset"`` form, else None.
    """

    qtype: str
    bits: int
    block_size: int
    b: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    offsets: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Output features N (rows)."""
        return int(self.b.shape[0])

    @property
    def k(self) -> int:
        """Input features K (the quantized axis)."""
        return int(self.b.shape[1]) * self.block_size

    def attributes(self, accuracy_level: int = 4) -> dict[str, int]:
        """The MatMulNBits node attributes for this weight.

        Level 4 (int8 activations) is ORT's packed fast path; at level 1 8-bit weights take the
        dequantize-every-call fallback on CPU (tens of times slower).
        """
        return {
            "K": self.k,
            "N": self.n,
            "bits": self.bits,
            "block_size": self.block_size,
            "accuracy_level": accuracy_level,
        }


# Per-format decoders: raw blocks (N, n_blocks, type_size) uint8 -> (codes uint8 (N, G, group),
# scale f32 (N, G), zero int, offset f32 (N, G) | None) with w = (codes - zero) * scale (+ offset).


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The fp16 at byte ``start`` of every block, as float32 (exact)."""
    return np.ascontiguousarray(blocks[..., start : start + 2]).view(_F16)[..., 0].astype(np.float32)


def _low_high(qs: np.ndarray) -> np.ndarray:
    """(..., 16) bytes holding elements j (low nibble) and j + 16 (high) -> (..., 32) codes."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """(..., 4) bytes of a little-endian uint32, bit j for element j -> (..., 32) of 0/16."""
    return np.unpackbits(qh, axis=-1, bitorder="little") << 4


def _q4_0(blocks: np.ndarray):
    return _low_high(blocks[..., 2:18]), _f16(blocks, 0), 8, None


def _q4_1(blocks: np.ndarray):
    return _low_high(blocks[..., 4:20]), _f16(blocks, 0), 0, _f16(blocks, 2)


def _q5_0(blocks: np.ndarray):
    return _low_high(blocks[..., 6:22]) | _high_bits(blocks[..., 2:6]), _f16(blocks, 0), 16, None


def _q5_1(blocks: np.ndarray):
    codes = _low_high(blocks[..., 8:24]) | _high_bits(blocks[..., 4:8])
    return codes, _f16(blocks, 0), 0, _f16(blocks, 2)


def _q8_0(blocks: np.ndarray):
    return blocks[..., 2:34] ^ np.uint8(0x80), _f16(blocks, 0), 128, None  # int8 q -> q + 128


def _q4_k(blocks: np.ndarray):
    rows, n_super = blocks.shape[:2]
    sc, mn = Q4_K.get_scale_min(np.ascontiguousarray(blocks[..., 4:16]).reshape(-1, 12))
    qs = blocks[..., 16:144].reshape(rows, n_super, 4, 1, 32)  # 4 chunks of 64: low nibbles, then high
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-2).reshape(rows, n_super * 8, 32)
    scale = _f16(blocks, 0)[..., None] * sc.reshape(rows, n_super, 8).astype(np.float32)  # exact
    offset = -_f16(blocks, 2)[..., None] * mn.reshape(rows, n_super, 8).astype(np.float32)  # exact
    return codes, scale.reshape(rows, -1), 0, offset.reshape(rows, -1)


def _q6_k(blocks: np.ndarray):
    rows, n_super = blocks.shape[:2]
    ql = blocks[..., 0:128].reshape(rows, n_super, 2, 1, 64)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=-2).reshape(rows, n_super, 8, 32)
    qh = blocks[..., 128:192].reshape(rows, n_super, 2, 1, 32)
    high = (qh >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 0x03  # (rows, S, 2, 4, 32)
    codes = (low | (high.reshape(rows, n_super, 8, 32) << 4)).reshape(rows, n_super * 16, 16)
    sub = np.ascontiguousarray(blocks[..., 192:208]).view(np.int8).astype(np.float32)
    scale = _f16(blocks, 208)[..., None] * sub  # fp16 x int8: exact in float32
    return codes, scale.reshape(rows, -1), 32, None


# name -> (decoder, MatMulNBits bits, group size along K, middle code of a format with a minimum)
_FORMATS = {
    "Q4_0": (_q4_0, 4, 32, None),
    "Q4_1": (_q4_1, 4, 32, 8),
    "Q4_K": (_q4_k, 4, 32, 8),
    "Q5_0": (_q5_0, 8, 32, None),
    "Q5_1": (_q5_1, 8, 32, 16),
    "Q6_K": (_q6_k, 8, 16, None),
    "Q8_0": (_q8_0, 8, 32, None),
}
SUPPORTED_TYPES: tuple[str, ...] = tuple(_FORMATS)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """(..., m) codes -> MatMulNBits bytes: 8 bits as is, 4 bits two per byte, low nibble first."""
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros_like(codes[..., :1])], axis=-1)
    return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4), dtype=np.uint8)


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_codes``: (..., bytes) -> (..., count) codes."""
    if bits == 8:
        return packed[..., :count]
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)[..., :count]


def _type_name(qtype) -> str:
    return getattr(qtype, "name", str(qtype))


def blocks_to_nbits(raw: np.ndarray, qtype, affine: Affine = "offset") -> NBitsWeight:
    """Convert one tensor's raw GGUF blocks into MatMulNBits arrays, keeping the GGUF grid.

    Args:
        raw: uint8 (N, bytes per row) of a tensor of GGUF shape [K, N]: ``gguf_tensors(path)[name].data``
            or ``GGUFReader``'s ``tensor.data``; leading dimensions beyond two are folded into N.
        qtype: a ``gguf.GGMLQuantizationType`` or its name; one of ``SUPPORTED_TYPES``.
        affine: how formats with a minimum (Q4_1, Q5_1, Q4_K) carry it: ``"offset"`` (exact, fast;
            the graph must add ``blocksum(x) @ offsets.T``) or ``"float_zero_point"`` (one node, slow
            on CPU); see the module docstring. Formats without a minimum ignore it.

    Returns:
        The weight; ``dequantize(result)`` equals ``gguf.quants.dequantize(raw, qtype)`` (bit-exact,
        except float zero points: float32 rounding).

    Raises:
        ModelLoadError: the type is not supported or the bytes do not form whole blocks.
        ConfigError: ``affine`` is not one of ``AFFINE_FORMS``.
    """
    name = _type_name(qtype)
    if name not in _FORMATS:
        raise ModelLoadError(
            f"GGUF type {name} has no lossless MatMulNBits form here; supported: "
            f"{', '.join(SUPPORTED_TYPES)}; dequantize this tensor (gguf.quants.dequantize) instead"
        )
    if affine not in AFFINE_FORMS:
        raise ConfigError(f"affine={affine!r} is not allowed; use one of {', '.join(AFFINE_FORMS)}")
    _, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
    raw = np.asarray(raw).view(np.uint8)
    if raw.ndim < 2 or raw.shape[-1] % type_size:
        raise ModelLoadError(
            f"{name} tensor bytes of shape {raw.shape} are not rows of whole {type_size}-byte blocks; "
            "pass GGUFReader's tensor.data for this tensor unchanged"
        )
    blocks = raw.reshape(-1, raw.shape[-1] // type_size, type_size)  # (N, blocks per row, type_size)
    decode, bits, group, middle = _FORMATS[name]
    codes, scale, zero, offset = decode(blocks)  # (N, G, group), (N, G), int, (N, G) | None
    default = 2 ** (bits - 1)  # MatMulNBits' zero point when the input is left out
    if offset is None:  # w = (codes - zero) * scale: shift codes onto the default zero point
        codes, zero_points = (codes + np.uint8(default - zero) if zero != default else codes), None
    elif affine == "offset":
        codes, zero_points, offset = _centre(codes, scale, offset, middle, bits)
    else:
        codes, scale, zero_points = _float_zero_points(codes, scale, offset)
        offset = None
    scale = np.ascontiguousarray(scale, np.float32)
    return NBitsWeight(name, bits, group, pack_codes(codes, bits), scale, zero_points, offset)


def _centre(codes: np.ndarray, scale: np.ndarray, offset: np.ndarray, middle: int, bits: int):
    """``codes * scale + offset`` as ``(codes' - 2**(bits-1)) * scale + offset'``, exactly.

    Centring the codes (offset' = offset + middle * scale) shrinks the weights the int8 kernel
    multiplies, so accuracy_level 4 loses less, and lets the zero-point input be left out. A block whose
    offset' is not exact in float32 keeps offset and gets the explicit zero point that undoes the shift.
    """
    default = 2 ** (bits - 1)
    shift = default - middle  # 0 for 4-bit codes 0..15, 112 for 5-bit codes 0..31 stored as 8 bits
    a, b = offset.astype(np.float64), middle * scale.astype(np.float64)  # both exact
    total = a + b
    b_part = total - a  # two-sum: total + err == a + b exactly
    err = (a - (total - b_part)) + (b - b_part)
    exact = (err == 0) & (total.astype(np.float32) == total)  # (N, G)
    offset = np.where(exact, total, a).astype(np.float32)
    zero_points = None if exact.all() else pack_codes(np.where(exact, default, shift).astype(np.uint8), bits)
    return (codes + np.uint8(shift) if shift else codes), zero_points, offset


def _float_zero_points(codes: np.ndarray, scale: np.ndarray, offset: np.ndarray):
    """``codes * scale + offset`` as ``(codes - zp) * scale`` with float zp = -offset / scale.

    A block with scale 0 holds ``offset`` everywhere; it becomes codes 1, scale = offset, zp = 0.
    """
    flat = scale == 0  # (N, G)
    with np.errstate(divide="ignore", invalid="ignore"):
        zp = np.where(flat, np.float32(0), -offset / scale).astype(np.float32)
    if flat.any():
        codes = np.where(flat[..., None], np.uint8(1), codes)
        scale = np.where(flat, offset, scale)
    return codes, scale, zp


def dequantize(weight: NBitsWeight) -> np.ndarray:
    """MatMulNBits' dequantization of ``weight`` in numpy: W as float32 (N, K)."""
    n, groups = weight.scales.shape
    q = unpack_codes(weight.b, weight.bits, weight.block_size).astype(np.float32)  # (N, G, block)
    zp = weight.zero_points
    if zp is None:
        zp = np.full((n, groups), 2 ** (weight.bits - 1), np.float32)
    elif zp.dtype == np.uint8:
        zp = unpack_codes(zp, weight.bits, groups).astype(np.float32)  # (N, G)
    w = (q - zp[..., None]) * weight.scales[..., None]
    if weight.offsets is not None:
        w = w + weight.offsets[..., None]
    return w.reshape(n, groups * weight.block_size)


def permute_rows(weight: NBitsWeight, order: np.ndarray) -> NBitsWeight:
    """``weight`` with output rows reordered: row i of the result is row ``order[i]`` of ``weight``.

    Rows (output features) are independent in every format, so codes, scales, zero points and offsets
    move whole and the result stays exact.
    """
    order = np.asarray(order)
    if sorted(order.tolist()) != list(range(weight.n)):
        raise ConfigError(f"order must be a permutation of 0..{weight.n - 1}; got {order.shape[0]} entries")

    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[order])

    return dataclasses.replace(
        weight,
        b=take(weight.b),
        scales=take(weight.scales),
        zero_points=take(weight.zero_points),
        offsets=take(weight.offsets),
    )


def llama_rope_row_order(n_rows: int, n_head: int) -> np.ndarray:
    """The row order that undoes llama.cpp's rotary permutation of Llama q/k projections.

    convert_hf_to_gguf.py interleaves each head's two rotary halves; transformers' GGUF loader
    (``LlamaTensorProcessor._reverse_permute_weights``) puts them back. ``permute_rows(w, order)`` with
    this order does the same on the quantized rows. Pass ``n_head = num_key_value_heads`` for attn_k.

    Returns:
        int64 (n_rows,) indices.
    """
    if n_head <= 0 or n_rows % (2 * n_head):
        raise ConfigError(f"{n_rows} rows do not split into {n_head} heads of two rotary halves")
    return np.arange(n_rows).reshape(n_head, n_rows // n_head // 2, 2).swapaxes(1, 2).reshape(-1)


def gather_arrays(weight: NBitsWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """GatherBlockQuantized inputs (uint8 data, gather_axis 0, quantize_axis 1) for an embedding.

    The op takes uint8 zero points only, so the float-zero-point and offset forms are refused.

    Returns:
        data uint8 (V, D * bits / 8), scales float32 (V, D / block_size), zero_points uint8 (packed like
        data) or None for the default 2**(bits-1).
    """
    float_zp = weight.zero_points is not None and weight.zero_points.dtype != np.uint8
    if weight.offsets is not None or float_zp:
        raise ConfigError(
            f"GatherBlockQuantized needs uint8 zero points; this {weight.qtype} weight has float zero points "
            "or offsets; use a type without a minimum (Q4_0, Q5_0, Q6_K, Q8_0) or dequantize the embedding"
        )
    return weight.b.reshape(weight.n, -1), weight.scales, weight.zero_points
