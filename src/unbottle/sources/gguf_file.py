"""GGUF files, dequantised by transformers once and cached as safetensors.

transformers' GGUF loader dequantises every tensor to fp32 in Python (~18 s for a 135M model).
We do that once per file, keyed by the file's SHA-256, and write a normal model folder into the
cache; every later load reads that folder (well under a second). Writes go to a temporary folder
that is renamed into place, so an interrupted conversion never leaves a half cache behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

from safetensors.torch import save_model

from unbottle.core.errors import ModelLoadError
from unbottle.sources.base import Loaded, ModelSource, task_of
from unbottle.sources.files import check_gguf, gguf_architecture, sha256_of
from unbottle.sources.hf_folder import HFFolderSource, quiet_transformers

CONVERTED_NOTE = "converted GGUF once into safetensors cache"  # the load note of a first load
_DONE = "unbottle-cache.json"


def cache_root() -> Path:
    """``$UNBOTTLE_CACHE``, else ``$XDG_CACHE_HOME/unbottle``, else ``~/.cache/unbottle``."""
    if os.environ.get("UNBOTTLE_CACHE"):
        return Path(os.environ["UNBOTTLE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unbottle"


def model_type_of(gguf_architecture: str) -> str:
    """llama.cpp spells some architectures differently from transformers (``qwen2moe``, ``gpt-oss``)."""
    name = gguf_architecture.replace("-", "_")
    return {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe"}.get(name, name)


class GGUFSource(ModelSource):
    """A single ``.gguf`` file."""

    kind = "gguf"

    def __init__(self, path: Path, spec: str | None = None) -> None:
        super().__init__(spec or str(path))
        self.path = path
        if not path.is_file():
            raise ModelLoadError(f"{path} is not a file; give a .gguf file or a model folder")
        try:
            arch = gguf_architecture(path)
        except (ValueError, struct.error, UnicodeDecodeError):
            arch = None  # damaged header: the full check below names the problem
        self.architecture = model_type_of(arch or check_gguf(path))
        task_of(self.architecture, str(path))
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        if self.architecture not in GGUF_SUPPORTED_ARCHITECTURES:
            raise ModelLoadError(
                f"{path} holds a {self.architecture!r} model, which transformers cannot load from GGUF; "
                f"supported: {', '.join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a != 'general')}"
            )

    def cache_dir(self) -> Path:
        digest = sha256_of(self.path)
        return cache_root() / "gguf" / f"{self.path.stem}-{digest[:16]}"

    def content_files(self) -> list[Path]:
        return [self.path]

    def load(self, dtype: str | None = None) -> Loaded:
        start = time.perf_counter()
        target = self.cache_dir()
        note = f"loaded from safetensors cache {target}"
        if not (target / _DONE).exists():
            check_gguf(self.path)  # full integrity check; a cache hit means the same bytes passed it
            self._convert(target)
            note = f"{CONVERTED_NOTE} {target}"
        loaded = HFFolderSource(target, spec=self.spec).load(dtype)
        loaded.info.source_kind = self.kind
        loaded.info.path = str(self.path)
        loaded.info.load_s = time.perf_counter() - start
        loaded.info.notes.insert(0, note)
        return loaded

    def _convert(self, target: Path) -> None:
        import transformers

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            with quiet_transformers(), _no_tqdm():
                kw = {"gguf_file": self.path.name}
                model = transformers.AutoModelForCausalLM.from_pretrained(str(self.path.parent), **kw)
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.path.parent), **kw)
            config = model.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config  # weights are dequantised: the folder is plain fp32
            config.save_pretrained(tmp)
            save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            tokenizer.save_pretrained(tmp)
            (tmp / _DONE).write_text(json.dumps({"source": str(self.path)}))
            if target.exists() and not (target / _DONE).exists():
                shutil.rmtree(target)  # a stale folder without the completion marker
            try:
                tmp.rename(target)
            except OSError:  # another process finished the same conversion first
                if not (target / _DONE).exists():
                    raise
        except ModelLoadError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelLoadError(f"converting {self.path} failed: {exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _no_tqdm():
    """transformers' GGUF dequantisation draws its own tqdm bar; the CLI shows its own progress."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = original
