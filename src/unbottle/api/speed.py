"""``unbottle.bench``: prefill, decode and generate speed of one model, every raw sample stored."""

from __future__ import annotations

from typing import Any

from unbottle.api._common import Silent, config_of, document, store_of
from unbottle.benchmarking import BenchConfig, apply_threads, benchmark
from unbottle.core.env import manifest
from unbottle.models import resolve


def bench(
    model: str = "smollm2-135m",
    config: Any = None,
    *,
    store: Any = None,
    progress: Any = None,
    allow_pickle: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Benchmark ``model`` and record the run; return its document (what ``bench --json`` prints).

    Args:
        model: a known name (``unbottle models``), a Hugging Face folder, a ``.gguf`` file or a recipe
            folder.
        config: a ``benchmarking.BenchConfig``; or give its fields as keyword arguments
            (``prompt_lengths=(32, 512)``, ``scenarios=("decode",)``, ``threads=1``, ...).
        store: where the run is recorded; default ``$UNBOTTLE_HOME`` or ``./.unbottle``.
        progress: the CLI's progress (``message``, and called per repeat); default silent.
        allow_pickle: load pickle checkpoints (``weights_only=True``).

    Raises:
        ConfigError, ModelLoadError: bad settings or a model that can't be loaded (before any run).
    """
    config = config_of(BenchConfig, config, settings)
    progress = progress or Silent()
    store = store_of(store)
    source = resolve(model, allow_pickle=allow_pickle)
    threads = apply_threads(config.threads)
    progress.message(f"loading {source.describe()} …")
    loaded = source.load()
    progress.message("; ".join([f"loaded in {loaded.info.load_s:.1f} s", *loaded.info.notes]))
    with store.recording("bench", model, config.to_dict(), manifest(seed=config.seed)) as run:
        result = benchmark(loaded, config, sink=run.add, progress=progress if callable(progress) else None)
        run.complete({"model": loaded.info.to_dict(), "threads": threads, "notes": result.notes})
    return document(store, run.id)
