"""Block-quantized weights combined row-wise, exactly: a fused q/k/v or gate/up as one ``NBitsWeight``.

Parts of different formats meet at the widest bits and the smallest block (``widen``): the codes are
re-expressed, never re-quantized, so the fused weight dequantizes to the parts' rows stacked.
"""

from __future__ import annotations

import numpy as np

from unbottle.core.errors import ConfigError
from unbottle.sources.gguf_blocks import NBitsWeight, pack_codes, unpack_codes


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
    codes = unpack_codes(weight.b, weight.bits, weight.block_size) + np.uint8(shift)  # (N, G, block)
    zp = weight.zero_points
    if zp is not None and zp.dtype == np.uint8:
        zp = pack_codes(
            np.repeat(unpack_codes(zp, weight.bits, groups) + np.uint8(shift), split, axis=1), bits
        )
    elif zp is not None:  # float zero points move with the codes
        zp = np.repeat(zp + np.float32(shift), split, axis=1)

    def repeat(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.repeat(a, split, axis=1)

    return NBitsWeight(
        weight.qtype,
        bits,
        block_size,
        pack_codes(codes.reshape(n, groups * split, block_size), bits),
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
        default = [pack_codes(np.full(p.scales.shape, 2 ** (bits - 1), np.uint8), bits) for p in parts]
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
