"""Running ONNX Runtime GenAI's model builder for the ``genai`` pass: in a subprocess, on a saved
transformers folder, written aside and renamed into place, cached by weights, settings and versions;
then, for ``weights=gguf`` or ``weights=blocks``, its MatMuls re-weighted with llama.cpp blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unbottle.passes import block_quant, onnx_store
from unbottle.passes import onnx_quantize as oq
from unbottle.passes.base import matches
from unbottle.passes.genai_gguf import import_blocks, quantize_into
from unbottle.sources.gguf_file import cache_root
from unbottle.sources.hf_folder import quiet_transformers

if TYPE_CHECKING:
    from unbottle.passes.genai import GenaiConfig


BUILD_FORMAT = 4  # bump when a change here, in genai_gguf or in genai_edit changes the files written


# transformers architecture → what the builder calls it (it dispatches on config.architectures[0]).
SUPPORTED = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "Phi3ForCausalLM",
    "PhiForCausalLM",
    "SmolLM3ForCausalLM",
    "OlmoForCausalLM",
    "GraniteForCausalLM",
    "NemotronForCausalLM",
)


def architecture_of(model: Any) -> str:
    """The transformers class name the builder dispatches on (``LlamaForCausalLM``, ...)."""
    names = list(getattr(model.config, "architectures", None) or [])
    return names[0] if names else type(model).__name__


def build(
    model: Any, tokenizer: Any, config: GenaiConfig, folder: Path, key: str, gguf: Path | None = None
) -> dict[str, Any]:
    """Save ``model`` as a transformers folder, run the builder on it, and move the result to ``folder``.

    With ``gguf`` (weights=gguf) the built graph's weights are then replaced by that file's blocks.

    Written aside and renamed into place, so an interrupted build never looks finished.

    Raises:
        ValueError: the builder failed (its last lines of output are in the message).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        source = staging / "hf"
        with quiet_transformers():
            model.save_pretrained(source)
            if tokenizer is not None:
                tokenizer.save_pretrained(source)
        _name_architecture(source / "config.json", architecture_of(model))
        out = staging / "model"
        _run_builder(source, out, staging / "cache", config.frame())
        shutil.rmtree(source)  # the float copy is no longer needed; free its disk before rewriting
        imported = None
        if gguf is not None:
            imported = import_blocks(out / "model.onnx", Path(gguf), model, config.accuracy_level)
        elif config.weights == "blocks":
            imported = _quantize_blocks(model, tokenizer, config, out / "model.onnx")
        summary = oq.op_summary(out / "model.onnx")
        ops = summary["ops"]
        quantized = sum(v for k, v in ops.items() if k.endswith("MatMulNBits"))
        meta = {
            "key": key,
            "graph": "model.onnx",
            "config": config.to_dict(),
            "stored_bytes": sum(summary["weight_bytes"].values()),
            "ops": ops,
            "touched": [f"{quantized} MatMulNBits"] if quantized else [],
            "notes": [_describe_build(config, imported), *oq.describe(summary)],
        }
        (out / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.replace(out, folder)
        except OSError:  # another process finished the same build first
            if (done := reusable(folder, key)) is None:
                raise
            return done
        return meta
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _quantize_blocks(model: Any, tokenizer: Any, config: GenaiConfig, graph: Path) -> dict[str, Any]:
    """The builder's graph re-weighted with block formats computed from ``model``'s float weights."""
    importance = None
    if config.calibrate:
        importance = block_quant.activation_importance(model, tokenizer)
    output = model.get_output_embeddings()
    output_name = next((n for n, m in model.named_modules() if m is output), "lm_head")

    def format_of(module: str) -> str:
        if config.exclude and matches(module, config.exclude):
            return "q8_0"
        return config.output_format if module == output_name else config.block_format

    imported = quantize_into(graph, model, config.accuracy_level, format_of, importance)
    imported["calibration"] = None
    if importance is not None:
        imported["calibration"] = (
            block_quant.CALIBRATION_TEXT if tokenizer else "random token ids (no tokenizer)"
        )
    return imported


def _describe_build(config: GenaiConfig, imported: dict[str, Any] | None) -> str:
    if imported is None:
        return f"built by the ONNX Runtime GenAI model builder ({config.precision})"
    formats = ", ".join(f"{n} {t}" for t, n in imported["formats"].items())
    fused = f"; {imported['fused']} sibling MatMuls fused" if imported.get("fused") else ""
    if config.weights == "blocks":
        how = (
            f"searched under activation importance on {imported['calibration']}"
            if imported.get("calibration")
            else "min-max per block (gguf.quants)"
        )
        return (
            f"built by the ONNX Runtime GenAI model builder with llama.cpp block formats computed from the "
            f"float weights ({how}): MatMuls {formats}{fused}; embedding: {imported['embedding']}"
        )
    return (
        f"built by the ONNX Runtime GenAI model builder with the GGUF file's own blocks: MatMuls {formats} "
        f"({imported['offset_nodes']} with per-block offsets{fused}); embedding: {imported['embedding']}"
    )


def _run_builder(source: Path, out: Path, cache: Path, config: GenaiConfig) -> None:
    command = [
        sys.executable,
        "-m",
        "unbottle.passes._genai_builder",
        *("-i", str(source), "-o", str(out), "-p", config.precision, "-e", "cpu", "-c", str(cache)),
        "--extra_options",
        *config.builder_options(),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not (out / "genai_config.json").exists():
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "Exception" in ln] or lines[-2:]
        raise ValueError(f"the GenAI model builder failed (exit {done.returncode}): {errors[-1][:400]}")


def _name_architecture(path: Path, architecture: str) -> None:
    """The builder dispatches on ``architectures[0]``, which a GGUF conversion leaves out."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["architectures"] = [architecture]
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def reusable(folder: Path, key: str) -> dict[str, Any] | None:
    """The metadata of a finished build of the same key in ``folder``; None when it must be built.

    Raises:
        ValueError: ``folder`` exists and holds something other than a build by this pass.
    """
    return onnx_store.reusable(folder, key, made_by="genai", what="build")


def default_folder(key: str) -> Path:
    return cache_root() / "genai" / key[:16]


def build_key(model: Any, config: GenaiConfig, digest: str) -> str:
    """A hash of the weights' digest, the model config, the settings and the library versions."""
    import onnxruntime
    import onnxruntime_genai
    import transformers

    versions = [
        torch.__version__,
        transformers.__version__,
        onnxruntime.__version__,
        onnxruntime_genai.__version__,
    ]
    h = hashlib.sha256(digest.encode())
    h.update(json.dumps([config.file_key(), versions, BUILD_FORMAT], sort_keys=True).encode())
    h.update(model.config.to_json_string(use_diff=False).encode())
    return h.hexdigest()
