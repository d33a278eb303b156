"""Recipes: what was applied to which model, saved beside the result so every verb can load it.

A saved folder holds ``unbottle-recipe.json`` and, when the leading passes leave a plain
transformers model (precision, pruning), that model's weights (``save_pretrained``): those passes
are *baked*. Passes whose result can't be saved as plain weights (tensor subclasses, compiled
graphs, low-rank layers) are re-applied on load; they are deterministic given the recipe.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from unbottle.core.env import library_versions
from unbottle.core.errors import ConfigError, ModelLoadError
from unbottle.core.naming import opt
from unbottle.core.paths import check_writable_folder, save_failed
from unbottle.passes.apply import apply_, check_supported
from unbottle.passes.base import PassConfig
from unbottle.passes.registry import PASSES, config_class
from unbottle.sources import MODELS

RECIPE_FILE = "unbottle-recipe.json"
RECIPE_VERSION = 1


@dataclasses.dataclass
class Recipe:
    """The source model spec, the pass configs in order, and how many are baked into saved weights."""

    source: str
    passes: list[dict[str, Any]]
    baked: int = 0
    reports: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    libraries: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: str = ""
    onnx: str | None = None  # sub-folder holding the ONNX Runtime model, when the recipe ends in export
    search: str | None = None  # the ``unbottle optimize`` search that saved it, if any
    head: bool = True  # False: the source had no masked-LM head, and the one saved beside it is random
    version: int = RECIPE_VERSION

    def configs(self) -> list[PassConfig]:
        return self.configs_of(self.passes)

    @staticmethod
    def configs_of(passes: list[dict[str, Any]]) -> list[PassConfig]:
        out = []
        for data in passes:
            name = data.get("name") or _name_of(data)
            out.append(config_class(name).from_dict({k: v for k, v in data.items() if k != "name"}))
        return out

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)


def _name_of(data: dict[str, Any]) -> str:
    for name in PASSES.names():
        if PASSES.get(name).__name__ == data.get("type"):
            return name
    raise ModelLoadError(f"unknown pass config type {data.get('type')!r}")


def baked_prefix(configs: list[PassConfig]) -> int:
    """How many leading passes leave a plain transformers model that save_pretrained can write."""
    n = 0
    for c in configs:
        if not (c.stage == "torch" and type(c).saveable):
            break
        n += 1
    return n


def read_recipe(folder: Path) -> Recipe:
    """The folder's recipe, every pass in it checked, so a damaged or hand-edited file is named as
    the cause (with the pass at fault) instead of failing later inside a pass.

    Raises:
        ModelLoadError: unreadable or invalid JSON, another recipe version, unknown fields, or a pass
            this unbottle does not know or can't configure as written.
    """
    path = folder / RECIPE_FILE
    redo = "re-create the folder with `unbottle apply` (or restore the file)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"recipe {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {redo}"
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or data.get("version") != RECIPE_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise ModelLoadError(
            f"{path} is recipe version {version}; this unbottle reads version {RECIPE_VERSION}; {redo}"
        )
    known = {f.name for f in dataclasses.fields(Recipe)}
    if unknown := sorted(set(data) - known) or (["source"] if "source" not in data else []):
        raise ModelLoadError(f"recipe {path} has unknown or missing fields {unknown}; {redo}")
    recipe = Recipe(**data)
    for i, entry in enumerate(recipe.passes):
        try:
            recipe.configs_of([entry])
        except (ConfigError, ModelLoadError, KeyError, TypeError, ValueError) as exc:
            name = entry.get("name") if isinstance(entry, dict) else None
            raise ModelLoadError(f"recipe {path}, pass {i + 1} ({name or '?'}): {exc}; {redo}") from None
    return recipe


def save(baked_model: Any, recipe: Recipe, out: Path, overwrite: bool = False, final: Any = None) -> Path:
    """Write ``recipe`` (and ``baked_model``'s weights, when any pass is baked) atomically to ``out``.

    Args:
        baked_model: the ``Loaded`` after the baked prefix of passes (ignored when ``recipe.baked`` is 0).
        final: the fully optimised ``Loaded``; when it is an ONNX Runtime model its export folder is
            copied to ``out/onnx`` (with the tokenizer) and loaded from there, not re-exported.
        recipe: what to record.
        out: the folder to create.
        overwrite: replace an existing folder.

    Raises:
        ConfigError: ``out`` exists and ``overwrite`` is False.
    """
    check_writable_folder(out)
    if out.exists() and not overwrite:
        raise ConfigError(
            f"output folder {out} exists; choose another {opt('output', flag='-o')} or pass "
            f"{opt('overwrite')} to replace it"
        )
    recipe.libraries = library_versions()
    recipe.created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the saved model is an ordinary folder
    try:
        if recipe.baked:
            baked_model.model.save_pretrained(tmp)
            if baked_model.tokenizer is not None:
                baked_model.tokenizer.save_pretrained(tmp)
        graph = getattr(getattr(final, "model", None), "path", None)
        if graph is not None and str(graph).endswith(".onnx"):
            shutil.copytree(Path(graph).parent, tmp / "onnx")
            if final.tokenizer is not None:
                final.tokenizer.save_pretrained(tmp / "onnx")
            recipe.onnx = "onnx"
        (tmp / RECIPE_FILE).write_text(recipe.to_json(), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except (OSError, RuntimeError) as err:  # torch's and safetensors' writers raise RuntimeError
        raise save_failed(out, err) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def source_spec(model: str) -> str:
    """What a recipe records as its source: a registered name as is, a path made absolute."""
    return model if model in MODELS else str(Path(model).expanduser().resolve())


def apply_and_save(
    loaded: Any,
    configs: list[PassConfig],
    model: str,
    out: Path,
    overwrite: bool = False,
    search: str | None = None,
) -> tuple[Recipe, Any]:
    """Apply ``configs`` to ``loaded`` (a copy), save the result with its recipe; return both.

    The leading passes that leave a plain transformers model are baked into saved weights; the
    rest are recorded and re-applied on load (an ONNX Runtime model is saved as its graph folder).
    """
    check_supported(loaded.model, configs)  # every pass, before the baked ones run
    baked = baked_prefix(configs)
    baked_model, reports = apply_(loaded, configs[:baked])
    recipe = Recipe(
        source=source_spec(model),
        passes=[{**c.to_dict(), "name": c.name} for c in configs],
        baked=baked,
        search=search,
        head=loaded.info.head,
    )
    final = baked_model
    if baked < len(configs):
        final, more = apply_(baked_model, configs[baked:])
        reports += more
    recipe.reports = [r.to_dict() for r in reports]
    save(baked_model, recipe, out, overwrite, final=final)
    return recipe, final
