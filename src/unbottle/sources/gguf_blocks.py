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
import struct
from collections.abc import Iterable
from pathlib import Path
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


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """(..., m) codes -> MatMulNBits bytes: 8 bits as is, 4 bits two per byte, low nibble first."""
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros_like(codes[..., :1])], axis=-1)
    return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4), dtype=np.uint8)


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of ``_pack``: (..., bytes) -> (..., count) codes."""
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
    return NBitsWeight(name, bits, group, _pack(codes, bits), scale, zero_points, offset)


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
    zero_points = None if exact.all() else _pack(np.where(exact, default, shift).astype(np.uint8), bits)
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
    q = _unpack(weight.b, weight.bits, weight.block_size).astype(np.float32)  # (N, G, block)
    zp = weight.zero_points
    if zp is None:
        zp = np.full((n, groups), 2 ** (weight.bits - 1), np.float32)
    elif zp.dtype == np.uint8:
        zp = _unpack(zp, weight.bits, groups).astype(np.float32)  # (N, G)
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


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file: its type, GGUF shape and raw bytes.

    Attributes:
        name: the GGUF name (``"blk.0.attn_q.weight"``).
        qtype: the ``gguf.GGMLQuantizationType`` name (``"Q4_K"``, ``"F32"``, ...).
        shape: GGUF order, (ne0, ne1, ...): (K, N) for a weight.
        data: uint8 memory map (rows, bytes per row), as ``GGUFReader`` gives ``tensor.data`` for a
            quantized tensor (float tensors too are bytes here: view them as their dtype).
    """

    name: str
    qtype: str
    shape: tuple[int, ...]
    data: np.ndarray


# GGUF metadata value types of fixed size (gguf.GGUFValueType: 8 is a string, 9 an array)
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(buf, off: int, vtype: int) -> int:
    """Offset just past a metadata value of type ``vtype`` starting at ``off``."""
    if vtype in _SCALAR_BYTES:
        return off + _SCALAR_BYTES[vtype]
    if vtype == 8:
        return off + 8 + struct.unpack_from("<Q", buf, off)[0]
    if vtype != 9:
        raise ValueError(f"unknown metadata value type {vtype}")
    item, count = struct.unpack_from("<IQ", buf, off)
    off += 12
    if item in _SCALAR_BYTES:
        return off + count * _SCALAR_BYTES[item]
    if item == 8:  # vocabularies: hundreds of thousands of strings, walked without building them
        for _ in range(count):
            off += 8 + struct.unpack_from("<Q", buf, off)[0]
        return off
    for _ in range(count):
        off = _skip_value(buf, off, item)
    return off


def _string(buf, off: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", buf, off)
    return bytes(buf[off + 8 : off + 8 + length]).decode("utf-8", errors="replace"), off + 8 + length


def gguf_tensors(path: Path | str) -> dict[str, GGUFTensor]:
    """The tensor table of a GGUF file, with each tensor's bytes memory-mapped (nothing is read yet).

    ``gguf.GGUFReader`` builds a numpy view for every metadata array entry, which takes ~10 s for
    Gemma 3's 262k-token vocabulary; this walks past the metadata and reads only the tensor table.

    Raises:
        ModelLoadError: the file is not a little-endian GGUF v2/v3 file or is truncated.
    """
    try:
        buf = np.memmap(path, mode="r")
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"magic {magic!r} version {version}, expected b'GGUF' version 2 or 3")
        off, alignment = 24, gguf.GGUF_DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key, off = _string(buf, off)
            (vtype,) = struct.unpack_from("<I", buf, off)
            if key == "general.alignment" and vtype == 4:
                (alignment,) = struct.unpack_from("<I", buf, off + 4)
            off = _skip_value(buf, off + 4, vtype)
        infos = []
        for _ in range(n_tensors):
            name, off = _string(buf, off)
            (n_dims,) = struct.unpack_from("<I", buf, off)
            shape = struct.unpack_from(f"<{n_dims}Q", buf, off + 4)
            qtype, start = struct.unpack_from("<IQ", buf, off + 4 + 8 * n_dims)
            off += 4 + 8 * n_dims + 12
            infos.append((name, gguf.GGMLQuantizationType(qtype), shape, start))
        base = -(-off // alignment) * alignment
        out = {}
        for name, qtype, shape, start in infos:
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            row_bytes = shape[0] // block * type_size
            rows = int(np.prod(shape[1:], dtype=np.int64))
            begin = base + start
            if begin + rows * row_bytes > buf.shape[0]:
                raise ValueError(f"tensor {name} ends past the end of the file")
            data = buf[begin : begin + rows * row_bytes].reshape(rows, row_bytes)
            out[name] = GGUFTensor(name, qtype.name, tuple(int(d) for d in shape), data)
        return out
    except (ValueError, struct.error, OSError) as exc:
        raise ModelLoadError(f"{path} is not a readable GGUF file ({exc}); re-download it") from None


def read_nbits(
    path: Path | str, names: Iterable[str] | None = None, affine: Affine = "offset"
) -> dict[str, NBitsWeight]:
    """Read block-quantized tensors of a GGUF file as MatMulNBits weights.

    Args:
        path: the .gguf file (memory-mapped; only the converted tensors are read).
        names: GGUF tensor names (``"blk.0.attn_q.weight"``); None means every quantized tensor.
        affine: the form of formats with a minimum; see ``blocks_to_nbits``.

    Returns:
        GGUF name -> weight, in file order. Float tensors (F32, F16, BF16) are left out.

    Raises:
        ModelLoadError: a name is not in the file, or a tensor has an unsupported type.
    """
    tensors = gguf_tensors(path)
    if names is None:
        names = [n for n, t in tensors.items() if t.qtype not in ("F32", "F16", "BF16", "F64")]
    out = {}
    for name in names:
        if name not in tensors:
            raise ModelLoadError(f"{path} has no tensor {name!r}; it has e.g. {', '.join(list(tensors)[:3])}")
        try:
            out[name] = blocks_to_nbits(tensors[name].data, tensors[name].qtype, affine)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: tensor {name}: {exc}") from None
    return out


def widen(weight: NBitsWeight, bits: int, block_size: int) -> NBitsWeight:
    """The same weight with ``bits`` per code and blocks of ``block_size``, exactly.

    4-bit codes become 8-bit codes shifted onto the wider default zero point; a block splits into
    smaller ones that repeat its scale, zero point and offset. Used to fuse rows of mixed formats
    (a Q4_K query beside a Q6_K value) into one MatMulNBits.

    Raises:
        ConfigError: fewer bits than the weight has, or a block size that does not divide its own.
    """
    if bits not in (4, 8) or bits < weight.bits or weight.block_size % block_size:
        raise ConfigError(
            f"can't widen a {weight.bits}-bit, {weight.block_size}-wide {weight.qtype} weight to {bits} bits "
            f"in blocks of {block_size}; give >= {weight.bits} bits and a divisor of {weight.block_size}"
        )
    if (bits, block_size) == (weight.bits, weight.block_size):
        return weight
    n, groups = weight.scales.shape
    split = weight.block_size // block_size
    shift = 2 ** (bits - 1) - 2 ** (weight.bits - 1)
    codes = _unpack(weight.b, weight.bits, weight.block_size) + np.uint8(shift)  # (N, G, block)
    zp = weight.zero_points
    if zp is not None and zp.dtype == np.uint8:
        zp = _pack(np.repeat(_unpack(zp, weight.bits, groups) + np.uint8(shift), split, axis=1), bits)
    elif zp is not None:  # float zero points move with the codes
        zp = np.repeat(zp + np.float32(shift), split, axis=1)

    def repeat(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.repeat(a, split, axis=1)

    return NBitsWeight(
        weight.qtype,
        bits,
        block_size,
        _pack(codes.reshape(n, groups * split, block_size), bits),
        repeat(weight.scales),
        zp,
        repeat(weight.offsets),
    )


def concat_rows(weights: list[NBitsWeight]) -> NBitsWeight:
    """One weight holding the rows of ``weights`` in order (a fused q/k/v or gate/up), exactly.

    Mixed formats meet at the widest bits and the smallest block; zero points and offsets are filled
    in with their neutral values for parts without them.

    Raises:
        ConfigError: the parts differ in K, or mix float and uint8 zero points.
    """
    if len({w.k for w in weights}) != 1:
        raise ConfigError(f"can't fuse rows of weights with different K: {[w.k for w in weights]}")
    bits, block = max(w.bits for w in weights), min(w.block_size for w in weights)
    parts = [widen(w, bits, block) for w in weights]
    zps = [p.zero_points for p in parts]
    if len({z.dtype for z in zps if z is not None}) > 1:
        raise ConfigError("can't fuse weights whose zero points mix float and uint8")
    if all(z is None for z in zps):
        zero_points = None
    elif any(z is not None and z.dtype != np.uint8 for z in zps):
        zero_points = np.concatenate(
            [
                np.full(p.scales.shape, 2 ** (bits - 1), np.float32) if z is None else z
                for p, z in zip(parts, zps, strict=True)
            ]
        )
    else:
        default = [_pack(np.full(p.scales.shape, 2 ** (bits - 1), np.uint8), bits) for p in parts]
        zero_points = np.concatenate([d if z is None else z for d, z in zip(default, zps, strict=True)])
    offsets = None
    if any(p.offsets is not None for p in parts):
        offsets = np.concatenate([np.zeros_like(p.scales) if p.offsets is None else p.offsets for p in parts])
    qtype = "+".join(dict.fromkeys(w.qtype for w in weights))
    return NBitsWeight(
        qtype,
        bits,
        block,
        np.concatenate([p.b for p in parts]),
        np.concatenate([p.scales for p in parts]),
        zero_points,
        offsets,
    )
