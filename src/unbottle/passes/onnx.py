"""Runtime: export to ONNX with the KV cache and decode in ONNX Runtime, optionally with its quantizers.

At one thread ONNX Runtime's CPU kernels decode faster than eager torch, and its weight-only
block-wise ``MatMulNBits`` (8 or 4 bits, one scale per block of 32 weights) cuts the bytes each
token reads by 4-8x at a small perplexity cost. The pass exports the (possibly already pruned or
factorised) float32 model to one graph that takes and returns its KV cache
(``unbottle.passes.onnx_export``), optionally quantizes it (``onnx_quantize``), and returns an
``unbottle.runtime.OrtCausalLM`` that bench scenarios and evaluators call like the torch model.
The export is cached by a hash of the weights and settings, so re-applying the pass is quick.
Encoders (masked LMs, sequence classifiers) take the same pass without a cache:
``unbottle.passes.onnx_encoder``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from unbottle.core.errors import ConfigError
from unbottle.passes import onnx_quantize as oq
from unbottle.passes.base import Applied, PassConfig, PassContext, Requirements, Stage, handler
from unbottle.passes.onnx_encoder import apply_onnx_encoder, encoder_unsupported, is_encoder
from unbottle.passes.onnx_export import (
    EXPORT_FORMAT,
    check_exportable,
    check_float32,
    export_graph,
    unsupported,
)
from unbottle.passes.onnx_store import default_folder, quantize_and_save, reusable
from unbottle.runtime import OrtCausalLM
from unbottle.runtime.caches import cache_keyword
from unbottle.sources.base import count_parameters

QUANTIZE = ("none", "int8-dynamic", "int8-block", "int4-block")
OPTIMIZATION = ("disable", "basic", "extended", "all")
ATTENTION = ("eager", "sdpa")
# Fields that change how the graph runs, not what is in the file.
_RUN_ONLY = ("threads", "optimization", "output", "verify")
_QUANTIZER_ONLY = ("block_size", "accuracy_level", "symmetric", "exclude")


@dataclasses.dataclass(frozen=True)
class OnnxExportConfig(PassConfig):
    """Export to ONNX (KV cache in and out) and run in ONNX Runtime.

    Attributes:
        quantize: ``none``; ``int8-block`` / ``int4-block``: weight-only ``MatMulNBits`` with one
            scale (and zero point unless ``symmetric``) per ``block_size`` weights; ``int8-dynamic``:
            ``MatMulInteger`` with per-channel weights and per-tensor dynamic activations.
        block_size: weights per quantization block (16, 32, 64, 128 or 256).
        accuracy_level: ``MatMulNBits`` compute: 4 quantizes activations to int8 per block (fast on
            AVX2/VNNI CPUs), 1 keeps them in float32 (slower; 8-bit weights are then very slow).
        symmetric: block quantization without zero points.
        exclude: modules left in float32 when quantizing (names, last components or globs).
        optimization: ORT graph optimisation level.
        threads: ORT intra-op threads; None follows ``torch.get_num_threads()`` at run time.
        opset: ONNX opset of the exported graph.
        attention: attention implementation traced (``eager`` gives a smaller graph than ``sdpa``).
        output: folder for the ``.onnx`` file; default ``<unbottle cache>/onnx/<hash>``.
        verify: compare the graph's logits with the torch model's on a short probe after export.
    """

    name: ClassVar[str] = "onnx"
    stage: ClassVar[Stage] = "export"
    summary: ClassVar[str] = "ONNX export with KV cache, run in ONNX Runtime; optional ORT int8/int4 weights"
    requires: ClassVar[Requirements] = Requirements(packages=("onnx", "onnxruntime", "onnxscript"))
    saveable: ClassVar[bool] = False
    quantize: Literal["none", "int8-dynamic", "int8-block", "int4-block"] = "none"
    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = False
    # lm_head in int8 costs nothing measurable on smollm2-135m (+0.53% vs +0.57% perplexity) and
    # decodes ~30% faster (benchmarks/README.md), so nothing is excluded by default.
    exclude: tuple[str, ...] = ()
    optimization: Literal["disable", "basic", "extended", "all"] = "all"
    threads: int | None = None
    opset: int = 20
    attention: Literal["eager", "sdpa"] = "eager"
    output: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.exclude, str):
            object.__setattr__(self, "exclude", tuple(p for p in self.exclude.split("|") if p))
        _choice("quantize", self.quantize, QUANTIZE)
        _choice("optimization", self.optimization, OPTIMIZATION)
        _choice("attention", self.attention, ATTENTION)
        if self.block_size not in (16, 32, 64, 128, 256):
            raise ConfigError(f"onnx block_size={self.block_size} given; allowed: 16, 32, 64, 128, 256")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ConfigError(
                f"onnx accuracy_level={self.accuracy_level} given; allowed: 0 (unset), 1 (fp32), 2 (fp16), "
                "3 (bf16), 4 (int8 activations, the fast one on CPU)"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"onnx threads={self.threads} given; allowed: 1 or more, or none")
        if not 18 <= self.opset <= 23:
            raise ConfigError(f"onnx opset={self.opset} given; allowed: 18..23")

    def unsupported(self, model: Any) -> str | None:
        if is_encoder(model):
            return encoder_unsupported(model, self.attention)
        return unsupported(model, self.attention)

    def file_key(self) -> dict[str, Any]:
        """The settings that decide the graph file's content."""
        ignored = _RUN_ONLY + (_QUANTIZER_ONLY if self.quantize == "none" else ())
        return {k: v for k, v in self.to_dict().items() if k not in ignored}


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"onnx {field}={value!r} given; allowed: {', '.join(allowed)}")


@handler(OnnxExportConfig)
def apply_onnx(model: Any, config: OnnxExportConfig, context: PassContext) -> Applied:
    if is_encoder(model):
        check_float32(model)
        key = export_key(model, config, f"{weights_digest(model)}:head={context.head}")
        return apply_onnx_encoder(model, config, context, key, Path(config.output or default_folder(key)))
    check_exportable(model, config.attention)
    digest = weights_digest(model)
    key = export_key(model, config, digest)
    folder = Path(config.output) if config.output else default_folder(key)
    meta = reusable(folder, key)
    notes = []
    if meta is None:
        meta = write_export(model, config, folder, key, digest)
    else:
        notes.append(f"reused the export cached in {folder}")
    ort_model = OrtCausalLM(
        folder / meta["graph"],
        model.config,
        getattr(model, "generation_config", None),
        threads=config.threads,
        optimization=config.optimization,
        n_parameters=count_parameters(model),
        stored_bytes=meta["stored_bytes"],
    )
    ort_model.save_meta({**meta, "n_parameters": ort_model.n_parameters})
    notes += meta["notes"]
    if config.verify:
        notes.append(verify(model, ort_model, config))
    return Applied(ort_model, touched=meta["touched"], skipped=meta["skipped"], notes=notes)


def write_export(model: Any, config: OnnxExportConfig, folder: Path, key: str, digest: str) -> dict[str, Any]:
    """Export (or reuse the cached float export), quantize, and save into ``folder``; return its metadata.

    The folder is written aside and moved in, so an interrupted export never looks finished.
    """
    proto = float_graph(model, config, digest)
    todo, excluded = oq.split_by_exclude(proto, config.exclude if config.quantize != "none" else ())
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    path = staging / "model.onnx"
    summary = quantize_and_save(proto, config, path, excluded)
    del proto
    meta = {
        "key": key,
        "graph": path.name,
        "config": config.to_dict(),
        "stored_bytes": sum(summary["weight_bytes"].values()),
        "ops": summary["ops"],
        "touched": sorted(set(todo.values())),
        "skipped": {
            m: f"excluded (exclude={'|'.join(config.exclude)})" for m in sorted(set(excluded.values()))
        },
        "notes": oq.describe(summary),
    }
    (staging / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, folder)
    except OSError:  # another process finished the same export first
        shutil.rmtree(staging, ignore_errors=True)
        if (done := reusable(folder, key)) is None:
            raise
        return done
    return meta


def float_graph(model: Any, config: OnnxExportConfig, digest: str) -> Any:
    """The unquantized graph (``onnx.ModelProto``): exported, or read from the cache for a quantized config.

    Quantized variants of one model start from the same float export, cached under its own key, so
    trying int8 and int4 costs one export.
    """
    import onnx
    import onnx_ir as ir

    if config.quantize == "none":
        return ir.serde.serialize_model(export_graph(model, config.opset, config.attention))
    base = OnnxExportConfig(opset=config.opset, attention=config.attention, verify=False)
    base_key = export_key(model, base, digest)
    folder = default_folder(base_key)
    meta = reusable(folder, base_key) or write_export(model, base, folder, base_key, digest)
    return onnx.load(str(folder / meta["graph"]))


def export_key(model: Any, config: OnnxExportConfig, digest: str) -> str:
    """A hash of the weights' digest, the model config, the export settings and the library versions."""
    import onnx
    import onnxruntime
    import onnxscript
    import transformers

    versions = [torch.__version__, transformers.__version__, onnx.__version__, onnxruntime.__version__]
    h = hashlib.sha256(digest.encode())
    code = [EXPORT_FORMAT, onnxscript.__version__]
    h.update(json.dumps([config.file_key(), versions, code], sort_keys=True).encode())
    h.update(model.config.to_json_string(use_diff=False).encode())
    return h.hexdigest()


def weights_digest(model: Any) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes; shared tensors once)."""
    h = hashlib.sha256()
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        h.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def verify(model: Any, ort_model: Any, config: OnnxExportConfig) -> str:
    """Compare logits of the graph and the torch model on a probe (prefill of 8, then 2 cached steps).

    Raises:
        ValueError: an unquantized graph disagrees with the model (relative error above 1e-3).
    """
    from transformers import DynamicCache

    vocab = int(model.config.get_text_config(decoder=True).vocab_size)
    probe = torch.randint(0, vocab, (1, 10), generator=torch.Generator().manual_seed(0))
    pairs = []
    with torch.inference_mode():
        caches = DynamicCache(config=model.config), DynamicCache(config=ort_model.config)
        for chunk in (probe[:, :8], probe[:, 8:9], probe[:, 9:10]):
            ref = model(input_ids=chunk, use_cache=True, **{cache_keyword(model): caches[0]}).logits
            got = ort_model(input_ids=chunk, use_cache=True, cache=caches[1]).logits
            pairs.append((ref.float(), got.float()))
    ref = torch.cat([r.reshape(-1) for r, _ in pairs])
    got = torch.cat([g.reshape(-1) for _, g in pairs])
    err = float((ref - got).abs().max() / ref.abs().max())
    sqnr = float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum().clamp_min(1e-30)))
    if config.quantize == "none" and err > 1e-3:
        raise ValueError(
            f"the exported graph's logits differ from the torch model's by {err:.2e} (relative max); "
            "expected < 1e-3 for an unquantized export; try attention=sdpa or another opset"
        )
    probe_text = "verified on a 10-token probe (prefill + 2 cached steps)"
    return f"{probe_text}: max relative error {err:.1e}, SQNR {sqnr:.1f} dB"
