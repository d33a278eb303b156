"""Cheap integrity checks on weight files, so a bad file fails with one clear line.

Loaders deep inside safetensors, gguf or torch fail on truncated or corrupt files with messages
that name neither the file nor the fix; these checks read only headers and sizes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from gguf import GGUFReader

from unbottle.core.errors import ModelLoadError

_MAX_HEADER = 100 * 1024 * 1024


def check_safetensors(path: Path) -> None:
    """Verify a safetensors file's header parses and its tensor data is all there."""
    size = path.stat().st_size
    fix = "re-download or re-save the model (e.g. with save_pretrained)"
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{path} is not a safetensors file ({size} bytes, no header); {fix}")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, _MAX_HEADER):
            raise ModelLoadError(
                f"{path} is truncated or not a safetensors file: header claims {header_len} bytes, "
                f"file has {size}; {fix}"
            )
        try:
            header = json.loads(fh.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelLoadError(f"{path} has a corrupt safetensors header; {fix}") from None
    try:  # valid JSON of the wrong shape (a list, a string offset) is as corrupt as invalid JSON
        ends = [
            int(t["data_offsets"][1])
            for k, t in header.items()
            if k != "__metadata__" and "data_offsets" in t
        ]
    except (AttributeError, TypeError, KeyError, IndexError, ValueError):
        raise ModelLoadError(f"{path} has a corrupt safetensors header; {fix}") from None
    needed = 8 + header_len + max(ends, default=0)
    if needed > size:
        raise ModelLoadError(
            f"{path} is truncated: its header describes {needed} bytes, the file has {size}; {fix}"
        )


# GGUF value types: fixed sizes of scalars; 8 = string, 9 = array (gguf spec, version 2+).
_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_architecture(path: Path, max_keys: int = 64) -> str | None:
    """Read ``general.architecture`` from the first keys of a GGUF header without parsing it all.

    Returns None when the key is not among the first ``max_keys`` (``check_gguf`` then finds it).
    GGUFReader parses every key, including 50k-entry vocabularies, which takes seconds.
    """
    with path.open("rb") as fh:
        head = fh.read(24)
        if len(head) < 24 or head[:4] != b"GGUF":
            raise ModelLoadError(
                f"{path} is not a GGUF file (magic {head[:4]!r}, expected b'GGUF'); re-download the file"
            )
        n_kv = struct.unpack("<Q", head[16:24])[0]
        for _ in range(min(n_kv, max_keys)):
            key = _gguf_string(fh)
            (vtype,) = struct.unpack("<I", fh.read(4))
            if key == "general.architecture" and vtype == 8:
                return _gguf_string(fh)
            _gguf_skip(fh, vtype)
    return None


def _gguf_string(fh) -> str:
    (length,) = struct.unpack("<Q", fh.read(8))
    if length > _MAX_HEADER:
        raise ValueError("string length out of range")
    return fh.read(length).decode("utf-8", errors="replace")


def _gguf_skip(fh, vtype: int) -> None:
    if vtype in _GGUF_SCALAR:
        fh.seek(_GGUF_SCALAR[vtype], 1)
    elif vtype == 8:
        _gguf_string(fh)
    elif vtype == 9:
        item_type, count = struct.unpack("<IQ", fh.read(12))
        for _ in range(count):
            _gguf_skip(fh, item_type)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def check_gguf(path: Path) -> str:
    """Verify a GGUF file is complete; return its ``general.architecture``."""
    fix = "re-download the file"
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF'); {fix}")
    try:
        reader = GGUFReader(str(path))
        arch_field = reader.fields["general.architecture"]
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
        size = path.stat().st_size
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except ModelLoadError:
        raise
    except Exception as exc:  # gguf raises bare ValueError/KeyError/IndexError on damaged files
        raise ModelLoadError(f"{path} is a corrupt or truncated GGUF file ({exc}); {fix}") from None
    if end > size:
        raise ModelLoadError(f"{path} is truncated: tensors need {end} bytes, the file has {size}; {fix}")
    if not reader.tensors:
        raise ModelLoadError(
            f"{path} holds no tensors (a header and metadata only), so it is not a model; give a complete "
            f"GGUF file, e.g. {fix}"
        )
    return arch


def sha256_of(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
