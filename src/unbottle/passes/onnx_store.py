"""Where the onnx pass keeps its exports: one folder per weights-and-settings key in the unbottle cache,
reused when finished, and the quantize-then-save step every graph goes through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unbottle.passes import onnx_quantize as oq
from unbottle.sources.gguf_file import cache_root


def quantize_and_save(proto: Any, config: Any, path: Path, excluded: dict[str, str]) -> dict[str, Any]:
    """Quantize the graph ``proto`` as ``config`` says, the weight MatMuls ``excluded`` (node: module,
    ``oq.split_by_exclude``) left in float32, and save it to ``path``; its ``op_summary``."""
    bits = {"int8-block": 8, "int4-block": 4}.get(config.quantize)
    if bits is not None:
        proto = oq.quantize_blockwise(
            proto, bits, config.block_size, config.symmetric, config.accuracy_level, list(excluded)
        )
        oq.save(proto, path)
    elif config.quantize == "int8-dynamic":
        oq.quantize_dynamic_int8(proto, path, list(excluded))
    else:
        oq.save(proto, path)
    return oq.op_summary(path)


def reusable(folder: Path, key: str, made_by: str = "onnx", what: str = "export") -> dict[str, Any] | None:
    """The metadata of a finished ``what`` (export, build) of the same key in ``folder``; None when it
    must be written (our own of another model or settings is replaced).

    Raises:
        ValueError: ``folder`` exists and holds something other than one by the ``made_by`` pass.
    """
    manifest = folder / "export.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        return meta if meta.get("key") == key and (folder / meta["graph"]).exists() else None
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(
            f"{made_by} output folder {folder} exists and is not an unbottle {what}; "
            "give an empty or new folder"
        )
    return None


def default_folder(key: str) -> Path:
    return cache_root() / "onnx" / key[:16]
