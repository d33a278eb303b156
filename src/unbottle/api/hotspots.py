"""``unbottle.profile``: where a model's time goes against this machine's measured peaks, and what to do."""

from __future__ import annotations

import dataclasses
from typing import Any

from unbottle.api._common import Silent, config_of, document, store_of
from unbottle.benchmarking import apply_threads
from unbottle.core.naming import opt
from unbottle.models import resolve
from unbottle.profiling import ProfileConfig, cached_peaks, profile_model
from unbottle.profiling.run import trace_paths
from unbottle.sources.base import check_length, require_causal_lm


def profile(
    model: str = "smollm2-135m",
    config: Any = None,
    *,
    store: Any = None,
    progress: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Profile ``model`` and record the run; return its document (what ``profile --json`` prints).

    Args:
        model: as ``bench`` (a causal LM).
        config: a ``profiling.ProfileConfig``; or its fields as keyword arguments (``prompt_length=128``,
            ``decode_tokens=16``, ``threads=1``, ...). Traces go to the store's ``traces/`` unless
            ``trace_dir`` says otherwise.
        store, progress: as ``bench``.
    """
    progress, store = progress or Silent(), store_of(store)
    config = config_of(ProfileConfig, config, settings)
    if config.trace_dir is None:
        config = dataclasses.replace(config, trace_dir=str(store.root / "traces"))
    trace_paths(config.trace_dir, "probe")  # an unwritable trace folder fails before anything loads
    source = resolve(model)
    threads = apply_threads(config.threads)
    progress.message(f"loading {source.describe()} …")
    loaded = source.load()
    require_causal_lm(loaded, model, "unbottle profile profiles causal language models")
    length = config.prompt_length + config.decode_tokens + 1
    fix = f"lower {opt('prompt_length')} or {opt('decode_tokens')}"
    check_length(loaded, length, f"{opt('prompt_length')} + {opt('decode_tokens')} + 1", fix)
    progress.message(
        f"machine peaks at {threads['torch_num_threads']} thread(s) (measured once, then cached) …"
    )
    peaks = cached_peaks(store, threads["torch_num_threads"], config.refresh_peaks, config.device)
    with store.recording("profile", model, config.to_dict()) as run:
        progress.message("profiling prefill and decode …")
        doc = profile_model(loaded, config, peaks, label=f"run-{run.id}")
        run.complete({"profile": doc, "model": loaded.info.to_dict(), "threads": threads})
    return document(store, run.id)
