"""Any model spec to a loaded model: what every verb accepts as MODEL.

A known name, a Hugging Face folder or a ``.gguf`` file is a plain source (``unbottle.sources``); a
folder written by ``unbottle apply`` or ``optimize`` holds a recipe (a source plus passes) and the
baked weights when there are any, so it resolves here, above both the sources and the passes:
loading restores the optimised model — the baked weights (or the source model when nothing is
baked), then the recipe's remaining passes re-applied in order, or the saved ONNX Runtime model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from unbottle.core.errors import ModelLoadError
from unbottle.passes.apply import apply_
from unbottle.passes.recipe import RECIPE_FILE, read_recipe
from unbottle.runtime import OrtCausalLM
from unbottle.runtime.genai_model import GenaiCausalLM
from unbottle.runtime.hybrid_model import HybridCausalLM
from unbottle.runtime.ort_encoder import OrtEncoder
from unbottle.runtime.ort_model import META_FILE
from unbottle.sources import resolve as resolve_source
from unbottle.sources.base import Loaded, ModelInfo, ModelSource, Task
from unbottle.sources.hf_folder import HFFolderSource, load_tokenizer


def resolve(spec: str, allow_pickle: bool = False) -> ModelSource:
    """Turn a model spec into a source without loading weights: a recipe folder, else
    ``sources.resolve`` (a known name, a model folder or a ``.gguf`` file).

    Raises:
        ModelLoadError: the spec names nothing loadable; the message says what is allowed.
    """
    path = Path(spec).expanduser()
    if path.is_dir() and (path / RECIPE_FILE).is_file():
        return RecipeSource(path, spec=spec)
    return resolve_source(spec, allow_pickle=allow_pickle)


def load(spec: str, dtype: str | None = None, allow_pickle: bool = False) -> Loaded:
    """Resolve ``spec`` and load it (see ``resolve``)."""
    return resolve(spec, allow_pickle=allow_pickle).load(dtype)


class RecipeSource(ModelSource):
    """A folder holding ``unbottle-recipe.json``."""

    kind = "recipe"

    def __init__(self, path: Path, spec: str | None = None) -> None:
        super().__init__(spec or str(path))
        self.path = path
        self.recipe = read_recipe(path)

    def content_files(self) -> list[Path]:
        """The folder's own files (recipe, baked weights, ONNX graphs) and the source it names."""
        own = sorted(p for p in self.path.rglob("*") if p.is_file() and p.name != "report.html")
        return own if self.recipe.baked else own + resolve(self.recipe.source).content_files()

    def probe_task(self) -> Task:
        """The task its ONNX folder records (a causal LM where it records none); else the task of the
        model the recipe starts from."""
        if self.recipe.onnx:
            meta = self.path / self.recipe.onnx / META_FILE
            task = json.loads(meta.read_text(encoding="utf-8")).get("task") if meta.exists() else None
            return task or "causal-lm"
        return resolve(self.recipe.source).probe_task()

    def probe_head(self) -> bool:
        return self.recipe.head

    def load(self, dtype: str | None = None) -> Loaded:
        start = time.perf_counter()
        configs = self.recipe.configs()
        if self.recipe.onnx:
            return self._load_onnx(configs, start)
        base = HFFolderSource(self.path, spec=self.spec) if self.recipe.baked else resolve(self.recipe.source)
        loaded = base.load(dtype)
        rest = configs[self.recipe.baked :]
        if rest:
            loaded, _ = apply_(loaded, rest, copy_model=False)
        loaded.info.head = loaded.info.head and self.recipe.head  # baked weights hold the random head too
        loaded.info.spec = self.spec
        loaded.info.source_kind = self.kind
        loaded.info.path = str(self.path)
        loaded.info.load_s = time.perf_counter() - start
        loaded.info.notes.append(
            f"recipe from {self.recipe.source}: {len(configs)} pass(es), {self.recipe.baked} baked into "
            f"saved weights, {len(rest)} re-applied on load"
        )
        return loaded

    def _load_onnx(self, configs: list, start: float) -> Loaded:
        """The saved ONNX Runtime model, opened directly (no re-export)."""
        folder = self.path / self.recipe.onnx
        if not folder.is_dir():
            raise ModelLoadError(
                f"{self.path} names ONNX folder {folder} in its recipe, but it is missing; "
                "re-create it with `unbottle apply`"
            )
        notes: list[str] = []
        torch_prefill = any(c.name == "genai" and c.prefill == "torch" for c in configs)
        task = self.probe_task()
        if (folder / "genai_config.json").exists() and torch_prefill:
            model = self._hybrid(folder, notes)
        elif (folder / "genai_config.json").exists():
            model = GenaiCausalLM.load(folder)
        elif task != "causal-lm":
            model = OrtEncoder.load(folder)
        else:
            model = OrtCausalLM.load(folder)
        info = ModelInfo(
            spec=self.spec,
            source_kind=self.kind,
            task=task,
            head=self.recipe.head,
            architecture=model.config.model_type,
            n_parameters=sum(p.numel() for p in model.parameters()),
            dtype="onnx",
            path=str(folder),
            load_s=time.perf_counter() - start,
            notes=notes,
        )
        notes.append(f"ONNX Runtime model from the recipe of {self.recipe.source} ({len(configs)} pass(es))")
        return Loaded(model=model, tokenizer=load_tokenizer(folder, notes), info=info)

    def _hybrid(self, folder: Path, notes: list[str]):
        """The GenAI graph with the recipe's source model (float) for prompts (``genai:prefill=torch``)."""
        if self.recipe.baked:
            raise ModelLoadError(
                f"{self.path}: a torch-prefill GenAI model loads its float model from the recipe's source, "
                "but this recipe baked earlier passes; re-create it with genai first"
            )
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        source = resolve(self.recipe.source).load()
        notes.append(f"prompts run in {self.recipe.source} (float torch), decoding in the GenAI graph")
        return HybridCausalLM(  # the graph's bytes; the float model's are added
            folder, source.model, n_parameters=meta["n_parameters"], stored_bytes=meta.get("stored_bytes")
        )
