"""Hugging Face model folders: config.json + safetensors weights + tokenizer files.

Pickle checkpoints (``*.bin``, ``*.pt``) can run code when loaded, so they are refused unless the
user opts in, and then read only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from unbottle.core.errors import ModelLoadError
from unbottle.core.naming import opt
from unbottle.sources.base import (
    Loaded,
    ModelInfo,
    ModelSource,
    auto_class,
    count_parameters,
    read_config_json,
    task_of,
    torch_dtype,
)
from unbottle.sources.files import check_safetensors

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def pickle_refusal(paths: list[Path]) -> str:
    names = ", ".join(p.name for p in paths)
    return (
        f"{names} is a pickle checkpoint, which can run arbitrary code when loaded; unbottle loads "
        f"safetensors or GGUF weights. Convert it to safetensors, or pass {opt('allow_pickle')} to load it "
        "with torch.load(weights_only=True)"
    )


class HFFolderSource(ModelSource):
    """A folder written by ``save_pretrained``."""

    kind = "hf-folder"

    def __init__(self, path: Path, spec: str | None = None, allow_pickle: bool = False) -> None:
        super().__init__(spec or str(path))
        self.path = path
        self.allow_pickle = allow_pickle
        if not path.is_dir():
            raise ModelLoadError(f"{path} is not a folder; give a Hugging Face model folder or a .gguf file")
        self.config = read_config_json(path)
        self.task = task_of(
            str(self.config["model_type"]), str(path / "config.json"), self.config.get("architectures")
        )
        self.weights = sorted(path.glob("*.safetensors"))
        self.pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not self.weights and not self.pickles:
            raise ModelLoadError(
                f"{path} has no weights: expected *.safetensors files beside config.json; "
                "save the model with save_pretrained(..., safe_serialization=True)"
            )
        if not self.weights and not allow_pickle:
            raise ModelLoadError(pickle_refusal(self.pickles))

    def content_files(self) -> list[Path]:
        """Weights, config and tokenizer files: everything in the folder but subfolders."""
        return sorted(p for p in self.path.iterdir() if p.is_file())

    def load(self, dtype: str | None = None) -> Loaded:
        start = time.perf_counter()
        notes: list[str] = []
        if self.weights:
            for w in self.weights:
                check_safetensors(w)
            model = self._from_pretrained(dtype)
        else:
            model = self._from_pickle(dtype)
            notes.append(f"loaded pickle checkpoint(s) with weights_only=True: {self.pickles[0].name}")
        model.eval()
        tokenizer = load_tokenizer(self.path, notes)
        head = self.probe_head()
        if not head:
            notes.append(
                f"the checkpoint has no {self.task} head: transformers initialised one at random, so only "
                "the encoder's hidden states are measured (embeddings), never its head"
            )
        info = ModelInfo(
            spec=self.spec,
            source_kind=self.kind,
            task=self.task,
            architecture=str(self.config["model_type"]),
            n_parameters=count_parameters(model),
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            path=str(self.path),
            load_s=time.perf_counter() - start,
            notes=notes,
            head=head,
        )
        return Loaded(model=model, tokenizer=tokenizer, info=info)

    def probe_head(self) -> bool:
        """A causal LM's head is its lm_head (tied or not): always there. An encoder's head (masked-LM
        or classifier) is there when the checkpoint holds any weight the model has outside its encoder
        stack (``cls.predictions.*`` for BERT's masked-LM head, ``classifier.*`` for a classifier, ...),
        read from the safetensors headers and a weightless model built on the meta device."""
        if self.task == "causal-lm" or not self.weights:
            return True
        import transformers

        with quiet_transformers(), torch.device("meta"):
            config = transformers.AutoConfig.from_pretrained(str(self.path))
            skeleton = auto_class(self.task).from_config(config)
        prefix = f"{skeleton.base_model_prefix}."
        head_keys = {k for k in skeleton.state_dict() if not k.startswith(prefix)}
        for path in self.weights:
            with safe_open(str(path), framework="pt") as f:
                if head_keys & set(f.keys()):
                    return True
        return False

    def _from_pretrained(self, dtype: str | None) -> Any:
        cls = auto_class(self.task)
        dt = torch_dtype(dtype)  # outside the try: its ConfigError is a ValueError, not a load failure
        try:
            with quiet_transformers():
                return cls.from_pretrained(str(self.path), dtype=dt)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelLoadError(f"transformers could not load {self.path}: {exc}") from None

    def _from_pickle(self, dtype: str | None) -> Any:
        import transformers

        cfg = transformers.AutoConfig.from_pretrained(str(self.path))
        model = auto_class(self.task).from_config(cfg, dtype=torch_dtype(dtype))
        state: dict[str, Any] = {}
        for p in self.pickles:
            try:
                state.update(torch.load(p, map_location="cpu", weights_only=True))
            except Exception as exc:  # torch raises UnpicklingError/RuntimeError for unsafe or bad files
                raise ModelLoadError(f"cannot load {p} with weights_only=True: {exc}") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        real_missing = [k for k in missing if "lm_head" not in k]  # tied heads are absent by design
        if real_missing or unexpected:
            raise ModelLoadError(
                f"{self.path}: checkpoint does not match config.json "
                f"(missing {real_missing[:3]}, unexpected {unexpected[:3]})"
            )
        model.tie_weights()
        return model


def load_tokenizer(path: Path, notes: list[str]) -> Any:
    """The folder's tokenizer, or None with a note when it has none."""
    import transformers

    try:
        with quiet_transformers():
            return transformers.AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        notes.append(f"no usable tokenizer in {path} ({type(exc).__name__}); prompts use random token ids")
        return None


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' progress bars and info logs inside a load."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        transformers.logging.enable_progress_bar()
