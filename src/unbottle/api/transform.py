"""``unbottle.apply``: passes applied in order, the result saved with its recipe (loadable by every verb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unbottle.api._common import Silent, store_of
from unbottle.benchmarking import apply_threads
from unbottle.core.errors import ConfigError, PassError
from unbottle.core.naming import opt
from unbottle.core.paths import check_writable_folder
from unbottle.models import resolve
from unbottle.passes import check_composition, parse_pass, unavailable
from unbottle.passes.recipe import apply_and_save


def apply(
    model: str,
    passes: Any,
    output: str | Path,
    *,
    overwrite: bool = False,
    threads: int | None = None,
    store: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Apply ``passes`` to ``model``, save the result in ``output`` and record the run; return what
    ``apply --json`` prints (``run_id``, ``output``, each pass's ``reports``, ``baked``, ``model``).

    Args:
        model: as ``bench``.
        passes: pass texts (``"genai:weights=gguf"``, ``"wo-int8"``) or pass configs, in order.
        output: the folder to write; refused if it exists, unless ``overwrite``.
        threads, store, progress: as ``evaluate``.

    Raises:
        ConfigError, PassError: an unknown pass, a combination that can't work, a pass this machine
            can't run, or an existing output — all before the model loads.
    """
    configs = [parse_pass(p) if isinstance(p, str) else p for p in passes]
    check_composition(configs)
    for c in configs:
        if reasons := unavailable(c):
            raise PassError(f"pass {c.name!r} can't run on this machine: {'; '.join(reasons)}")
    output = Path(output)
    check_writable_folder(output)
    if output.exists() and not overwrite:
        raise ConfigError(
            f"output folder {output} exists; choose another {opt('output', flag='-o')} or pass "
            f"{opt('overwrite')} to replace it"
        )
    progress, store = progress or Silent(), store_of(store)
    source = resolve(model)
    apply_threads(threads)
    progress.message(f"loading {source.describe()} …")
    loaded = source.load()
    config = {"model": model, "passes": [c.to_dict() for c in configs], "output": str(output.resolve())}
    with store.recording("apply", model, config) as run:
        recipe, _ = apply_and_save(loaded, configs, model, output, overwrite)
        result = {
            "output": str(output),
            "reports": recipe.reports,
            "baked": recipe.baked,
            "model": loaded.info.to_dict(),
        }
        run.complete(result)
    return {"run_id": run.id, **result}
