"""Cheap integrity checks on weight files, so a bad file fails with one clear line.

Loaders deep inside safetensors, gguf or torch fail on truncated or corrupt files with messages
that name neither the file nor the fix; these checks read only headers and sizes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

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


def check_gguf(path: Path) -> str:
    """Verify a GGUF file is complete; return its ``general.architecture``."""
    fix = "re-download the file"
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF'); {fix}")
    try:
        from gguf import GGUFReader

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
    return arch


def sha256_of(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
