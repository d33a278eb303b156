"""What a model source is and what loading one gives back.

A source knows where a model comes from (a folder, a GGUF file, a package, a config) and turns it
into a ``Loaded``: the torch module, its tokenizer and a ``ModelInfo`` that says what was loaded.
Scenarios and evaluators only see ``Loaded``, so new families and tasks plug in without rework.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch

from unbottle.core.errors import ConfigError, ModelLoadError
from unbottle.sources.files import sha256_of

Task = Literal["causal-lm", "masked-lm", "sequence-classification"]
ENCODER_TASKS: tuple[str, ...] = ("masked-lm", "sequence-classification")  # encoder stacks, not decoders


@dataclasses.dataclass
class ModelInfo:
    """What was loaded, recorded with every run.

    Attributes:
        spec: the spec string the user gave.
        source_kind: ``hf-folder``, ``gguf``, ``packaged`` or ``tiny``.
        task: what the model does; scenarios check it (``causal-lm``, or an encoder's: ``masked-lm``,
            ``sequence-classification``).
        architecture: the transformers ``model_type`` (e.g. ``llama``).
        n_parameters: unique parameters (tied weights counted once).
        dtype: parameter dtype as loaded.
        path: file or folder the weights came from, if any.
        load_s: wall seconds the load took.
        notes: anything the user should know (cache hits, missing tokenizer, ...).
        head: whether the task's head came with the weights; False for a sentence encoder saved
            without its masked-LM or classifier head (transformers gives it a random one, which no
            metric may read).
    """

    spec: str
    source_kind: str
    task: Task
    architecture: str
    n_parameters: int = 0
    dtype: str = "float32"
    path: str | None = None
    load_s: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    head: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Loaded:
    """A loaded model ready to run: module in eval mode, tokenizer (may be None), and its info."""

    model: Any
    tokenizer: Any
    info: ModelInfo


def check_length(loaded: Loaded, length: int, what: str, fix: str) -> None:
    """Refuse ``length`` tokens that the model's position embeddings can't hold (before any work).

    Raises:
        ConfigError: ``{what} is {length} tokens but 'model' takes at most N positions; {fix}``.
    """
    limit = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise ConfigError(
            f"{what} is {length} tokens but {loaded.info.spec!r} takes at most {limit} positions; {fix}"
        )


class ModelSource(abc.ABC):
    """Somewhere a model comes from. ``load`` does the work; construction only validates cheaply."""

    kind: str = "abstract"

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @abc.abstractmethod
    def load(self, dtype: str | None = None) -> Loaded:
        """Load the model on CPU in ``dtype`` (default: float32)."""

    def describe(self) -> str:
        return f"{self.kind}: {self.spec}"

    def probe_task(self) -> Task:
        """The task the model loads for, without loading weights (a source that knows it from its
        config sets ``task``; a GGUF file holds a causal LM)."""
        return getattr(self, "task", "causal-lm")

    def probe_head(self) -> bool:
        """Whether the checkpoint carries the task's head (``ModelInfo.head``), without loading weights."""
        return True

    def content_files(self) -> list[Path]:
        """The files whose bytes are the model (weights, config, tokenizer); none for a model built
        from a registered config."""
        return []

    def fingerprint(self) -> str:
        """A digest of the model's content: its files' bytes (so a model retrained or replaced in
        the same place gets a new one), or its spec when it has no files."""
        files = self.content_files()
        digest = hashlib.sha256(b"" if files else f"{self.kind}:{self.spec}".encode())
        for path in files:
            digest.update(f"{path.name}\0{sha256_of(path)}\0".encode())
        return digest.hexdigest()[:16]


def task_of(model_type: str, where: str, architectures: Any = None) -> Task:
    """Map a transformers ``model_type`` (and the config's ``architectures``) to the task we load it
    for, or explain why we can't."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    # Encoders (bert, roberta, ...) are in both mappings; their pretrained head is the masked-LM one,
    # unless the checkpoint was saved as a sequence classifier.
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        saved_as = [str(a) for a in architectures or []]
        classifier = any(a.endswith("ForSequenceClassification") for a in saved_as)
        return "sequence-classification" if classifier else "masked-lm"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    raise ModelLoadError(
        f"unsupported architecture {model_type!r} in {where}; unbottle loads causal-LM and masked-LM "
        f"models that transformers knows (e.g. llama, mistral, qwen2, gpt2, bert); "
        "use a model of a supported architecture"
    )


def read_config_json(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"cannot read {path}: {exc}; a Hugging Face model folder needs a valid config.json"
        ) from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelLoadError(
            f"{path} has no 'model_type'; give a folder saved by transformers' save_pretrained"
        )
    return data


def count_parameters(model: Any) -> int:
    """Unique parameters: a tied embedding/lm_head pair counts once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def auto_class(task: Task) -> Any:
    import transformers

    return {
        "causal-lm": transformers.AutoModelForCausalLM,
        "masked-lm": transformers.AutoModelForMaskedLM,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
    }[task]


def torch_dtype(name: str | None) -> Any:
    allowed = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name is None:
        return torch.float32
    if name not in allowed:
        raise ConfigError(f"dtype {name!r} is not supported; allowed: {', '.join(allowed)}")
    return allowed[name]


def require_causal_lm(loaded: Loaded, spec: str, purpose: str) -> Loaded:
    """``loaded`` if it is a causal LM; else a ConfigError saying what ``purpose`` needs.

    ``purpose`` completes "… is a masked-lm model; <purpose>", e.g. "unbottle train trains causal
    language models".
    """
    if loaded.info.task != "causal-lm":
        raise ConfigError(f"{spec!r} is a {loaded.info.task} model; {purpose}")
    return loaded
