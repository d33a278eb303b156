"""A GGUF file's tensors as raw block bytes, memory-mapped, without the cost of ``gguf.GGUFReader``.

``gguf_tensors`` skips the metadata it does not need and maps each tensor's blocks straight from the
file; ``read_nbits`` turns the block-quantized ones into ``gguf_blocks.NBitsWeight`` (codes, scales,
zero points or offsets) for ONNX Runtime's block-quantized operators.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable
from pathlib import Path

import gguf
import numpy as np

from unbottle.core.errors import ModelLoadError
from unbottle.sources.gguf_blocks import Affine, NBitsWeight, blocks_to_nbits


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
