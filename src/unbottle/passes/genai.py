"""Runtime: ONNX Runtime GenAI's model builder and its decode loop.

The builder (``onnxruntime_genai.models.builder``, maintained with ONNX Runtime) writes a graph made
for decoding — fused attention (``GroupQueryAttention``), fused q/k/v, ``MatMulNBits`` weights at 4
or 8 bits (round-to-nearest or k-quant, optionally mixed by layer group) — and a ``genai_config.json``
so ``onnxruntime_genai`` can run it with preallocated, shared KV buffers. That loop decodes well
ahead of ours and of eager torch, and the saved folder runs in ONNX Runtime GenAI without unbottle.
The builder knows a fixed list of architectures (Llama, Mistral, Qwen2/3, Gemma 1-3, Phi, ...); the
rest is refused up front and left to the ``onnx`` pass. Builds are cached by weights and settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from unbottle.core.errors import ConfigError
from unbottle.passes.base import Applied, PassConfig, PassContext, Requirements, Stage, handler
from unbottle.passes.block_quant import FORMATS
from unbottle.passes.genai_build import SUPPORTED, architecture_of, build, build_key, default_folder, reusable
from unbottle.passes.onnx import verify, weights_digest
from unbottle.runtime.genai_model import GenaiCausalLM
from unbottle.runtime.hybrid_model import HybridCausalLM
from unbottle.sources.base import count_parameters

PRECISIONS = ("int4", "int8", "fp32")
ALGOS = ("rtn", "k_quant")
_RUN_ONLY = ("threads", "output", "verify", "prefill")
_BLOCKS_ONLY = ("block_format", "output_format", "calibrate", "exclude")
WEIGHTS = ("quantize", "gguf", "blocks")


@dataclasses.dataclass(frozen=True)
class GenaiConfig(PassConfig):
    """Build with ONNX Runtime GenAI's model builder and decode in its loop.

    Attributes:
        precision: weights of the MatMuls: ``int4`` / ``int8`` (``MatMulNBits``) or ``fp32``.
        algo: quantizer: ``rtn`` (round to nearest) or ``k_quant`` (llama.cpp-style search of scales).
        block_size: weights per quantization block (16, 32, 64, 128, 256).
        accuracy_level: ``MatMulNBits`` compute; 4 quantizes activations to int8 per block (the fast
            CPU path), 1 keeps them in float32.
        symmetric: blocks without zero points (the builder's default).
        weights: ``quantize`` (the builder quantizes the float weights), ``gguf``: every MatMul and
            the embedding take the quantized blocks of the .gguf file the model was loaded from,
            unchanged, or ``blocks``: llama.cpp's block formats computed from the float weights
            (``passes.block_quant``; a float minimum per block, searched under activation
            importance). With gguf or blocks, precision, algo, block_size, symmetric and mixed do not
            apply.
        block_format / output_format: with weights=blocks, the format of the MatMuls and of the
            output layer (and embedding): ``q4_0``, ``q4_1``, ``q5_1`` (8-bit codes) or ``q8_0``.
        calibrate: with weights=blocks, weight the Q4_1 search by each input channel's mean square
            activation on calibration text (a novel other than the evaluation text).
        exclude: with weights=blocks, layers (module names or patterns) kept at q8_0: 4 bits where
            it keeps the accuracy guard, 8 bits where it does not (the search fills this in by
            measured sensitivity).
        mixed: MatMul groups quantized to another type, ``selector:type`` joined by ``|``
            (selectors ``last_matmul``, ``mixed_layers``; types ``int4``, ``int8``), e.g.
            ``last_matmul:int8`` keeps the output layer at 8 bits.
        prefill: the engine of a prompt: ``genai`` (the graph) or ``torch``: the float model the
            build was made from runs the prompt and hands its KV cache to the graph, which decodes
            (``runtime.hybrid_model``; both stay in memory, and a saved folder loads the float model
            from the recipe's source).
        threads: intra-op threads; None follows ``torch.get_num_threads()``.
        output: folder for the build; default ``<unbottle cache>/genai/<hash>``.
        verify: compare logits with the torch model on a short probe after building.
    """

    name: ClassVar[str] = "genai"
    stage: ClassVar[Stage] = "export"
    summary: ClassVar[str] = (
        "ONNX Runtime GenAI model builder (fused attention, int4/int8) and its decode loop"
    )
    requires: ClassVar[Requirements] = Requirements(packages=("onnxruntime_genai", "onnxruntime"))
    saveable: ClassVar[bool] = False
    precision: Literal["int4", "int8", "fp32"] = "int4"
    algo: Literal["rtn", "k_quant"] = "rtn"
    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = True
    mixed: tuple[str, ...] = ()
    weights: Literal["quantize", "gguf", "blocks"] = "quantize"
    block_format: str = "q4_1"
    output_format: str = "q8_0"
    calibrate: bool = True
    exclude: tuple[str, ...] = ()
    prefill: Literal["genai", "torch"] = "genai"
    threads: int | None = None
    output: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.mixed, str):
            object.__setattr__(self, "mixed", tuple(p for p in self.mixed.split("|") if p))
        for field, value, allowed in (("precision", self.precision, PRECISIONS), ("algo", self.algo, ALGOS)):
            if value not in allowed:
                raise ConfigError(f"genai {field}={value!r} given; allowed: {', '.join(allowed)}")
        if self.block_size not in (16, 32, 64, 128, 256):
            raise ConfigError(f"genai block_size={self.block_size} given; allowed: 16, 32, 64, 128, 256")
        if self.accuracy_level not in (1, 2, 3, 4):
            raise ConfigError(
                f"genai accuracy_level={self.accuracy_level} given; allowed: 1 (fp32), 2 (fp16), 3 (bf16), "
                "4 (int8 activations, the fast one on CPU)"
            )
        for item in self.mixed:
            selector, _, kind = item.partition(":")
            if selector not in ("last_matmul", "mixed_layers") or kind not in ("int4", "int8"):
                raise ConfigError(
                    f"genai mixed={item!r} given; allowed: last_matmul|mixed_layers, each ':int4' or ':int8' "
                    "(e.g. mixed=last_matmul:int8)"
                )
        if self.weights not in WEIGHTS:
            raise ConfigError(f"genai weights={self.weights!r} given; allowed: {', '.join(WEIGHTS)}")
        self._check_blocks()
        if self.prefill not in ("genai", "torch"):
            raise ConfigError(f"genai prefill={self.prefill!r} given; allowed: genai, torch")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"genai threads={self.threads} given; allowed: 1 or more, or none")

    def _check_blocks(self) -> None:
        if isinstance(self.exclude, str):
            object.__setattr__(self, "exclude", tuple(p for p in self.exclude.split("|") if p))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        for field in ("block_format", "output_format"):
            if getattr(self, field) not in FORMATS:
                raise ConfigError(
                    f"genai {field}={getattr(self, field)!r} given; allowed: {', '.join(FORMATS)}"
                )
        if self.weights != "blocks" and self.exclude:
            raise ConfigError(
                f"genai exclude={'|'.join(self.exclude)!r} given with weights={self.weights}; layers are "
                "kept at 8 bits only with weights=blocks"
            )

    def accepts_exclude(self) -> bool:
        """Whether layers can be kept at higher precision (the search's per-layer fallback)."""
        return self.weights == "blocks"

    @property
    def quantize(self) -> str:
        """``none`` for an fp32 build (the probe then demands near-equal logits), else the precision."""
        if self.weights in ("gguf", "blocks"):
            return self.weights
        return "none" if self.precision == "fp32" else self.precision

    def frame(self) -> GenaiConfig:
        """The settings the builder runs with: for weights=gguf|blocks an int4 graph whose weights get
        replaced."""
        if self.weights == "quantize":
            return self
        frame = {"precision": "int4", "algo": "rtn", "block_size": 32, "symmetric": True, "mixed": ()}
        return dataclasses.replace(self, **frame)

    def unsupported(self, model: Any) -> str | None:
        """Architectures the builder does not know are refused before anything runs."""
        config = getattr(model, "config", None)
        if config is None or getattr(config, "is_encoder_decoder", False):
            return "the GenAI model builder takes a decoder-only causal LM"
        arch = architecture_of(model)
        window = getattr(config, "sliding_window", None)
        if arch == "MistralForCausalLM" and window and not getattr(config, "layer_types", None):
            # measured: from position `window` on its logits differ from transformers' (rel. 0.2-0.7)
            return (
                f"the GenAI model builder's Mistral graph does not reproduce the sliding window "
                f"({window} positions) as transformers does; use the onnx pass instead"
            )
        if arch in SUPPORTED:
            return None
        known = ", ".join(a.removesuffix("ForCausalLM") for a in SUPPORTED)
        return f"the GenAI model builder does not build {arch} (it builds {known}); use the onnx pass instead"

    def file_key(self) -> dict[str, Any]:
        """The settings that decide the files written (the block settings only with weights=blocks,
        so builds made before they existed keep their keys)."""
        skip = set(_RUN_ONLY) | (set() if self.weights == "blocks" else set(_BLOCKS_ONLY))
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def builder_options(self) -> list[str]:
        """``--extra_options`` for the builder."""
        # Full-length caches on sliding-window layers too: a windowed cache needs a past of at least the
        # window, so a plain session could not score windows from an empty past.
        options = ["hf_remote=false", "hf_token=false", "windowed_kv_cache=false"]
        if self.precision != "fp32":
            options += [
                f"accuracy_level={self.accuracy_level}",
                f"block_size={self.block_size}",
                f"is_symmetric={str(self.symmetric).lower()}",
                f"algo_config={self.algo}",
            ]
            if self.mixed:
                options.append(f"matmul_mixed_precision={','.join(self.mixed)}")
        return options


def check_buildable(model: Any) -> None:
    """Refuse weights the builder can't take (non-float32); architectures are refused by
    ``GenaiConfig.unsupported`` before any pass runs.

    Raises:
        ValueError: naming the dtype and what to use instead.
    """
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        found = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        raise ValueError(
            f"the genai pass builds from float32 weights; this model's are {found}: put genai before "
            "precision/quantize passes and choose its precision=int4|int8 instead"
        )


@handler(GenaiConfig)
def apply_genai(model: Any, config: GenaiConfig, context: PassContext) -> Applied:
    check_buildable(model)
    gguf = None
    if config.weights == "gguf":
        gguf = context.source
        if gguf is None or Path(gguf).suffix != ".gguf":
            raise ValueError(
                "genai weights=gguf takes the blocks of the .gguf file the model was loaded from; this "
                f"model came from {gguf or 'no file'}; load a .gguf file, or use genai without weights=gguf"
            )
    key = build_key(model, config, weights_digest(model))
    folder = Path(config.output) if config.output else default_folder(key)
    meta = reusable(folder, key)
    notes = []
    if meta is None:
        meta = build(model, context.tokenizer, config, folder, key, gguf)
    else:
        notes.append(f"reused the build cached in {folder}")
    runtime = runtime_for(folder, model, config, count_parameters(model), meta["stored_bytes"])
    runtime.save_meta({**meta, "n_parameters": runtime.n_parameters, "runtime": "genai"})
    notes += meta["notes"]
    if config.prefill == "torch":
        notes.append(
            "prompts run in the float torch model, which hands its KV cache to the graph for decoding"
        )
    if config.verify:
        notes.append(verify(model, runtime, config))
    return Applied(runtime, touched=meta["touched"], notes=notes)


def runtime_for(folder: Path, model: Any, config: GenaiConfig, n_parameters: int, stored_bytes: int) -> Any:
    """The model a build runs as: the GenAI graph alone, or with ``model`` for prompts
    (``prefill=torch``)."""
    kw = {"threads": config.threads, "n_parameters": n_parameters, "stored_bytes": stored_bytes}
    if config.prefill == "torch":
        return HybridCausalLM(folder, model, **kw)
    return GenaiCausalLM(folder, model.config, getattr(model, "generation_config", None), **kw)
