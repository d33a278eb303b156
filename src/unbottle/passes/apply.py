"""``unbottle.apply_``: run passes in order on a loaded model, refusing what cannot work up front."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import time
from pathlib import Path
from typing import Any

import torch

from unbottle.core.errors import ConfigError, PassError
from unbottle.core.naming import opt
from unbottle.passes.base import HANDLERS, STAGE_ORDER, PassConfig, PassContext, PassReport, model_type
from unbottle.passes.sizes import model_size
from unbottle.sources import Loaded


def check_composition(configs: list[PassConfig]) -> None:
    """Refuse orders that cannot work: stages must not go backwards, export/runtime at most once.

    Raises:
        ConfigError: naming the offending pair and the allowed order.
    """
    for earlier, later in zip(configs, configs[1:], strict=False):
        if STAGE_ORDER[later.stage] < STAGE_ORDER[earlier.stage]:
            raise ConfigError(
                f"pass {later.name!r} ({later.stage}) cannot follow {earlier.name!r} ({earlier.stage}): "
                "passes run in the order torch → compile → export → runtime; "
                f"reorder {opt('passes', flag='--pass')}"
            )
    for i, c in enumerate(configs):
        blockers = [e.name for e in configs[:i] if not type(e).exportable]
        if c.stage == "export" and blockers:
            raise ConfigError(
                f"pass {c.name!r} cannot export what {', '.join(repr(b) for b in blockers)} produce(s) "
                "(quantized or bf16 layers); quantize inside the export instead, e.g. "
                f"{opt('passes', flag='--pass')} onnx:quantize=int8-block"
            )
    for stage in ("compile", "export"):
        if sum(c.stage == stage for c in configs) > 1:
            raise ConfigError(f"at most one {stage} pass per recipe; got {[c.name for c in configs]}")


def check_supported(model: Any, configs: list[PassConfig]) -> None:
    """Refuse, before any pass runs, a pass that can't handle the model's architecture.

    Raises:
        PassError: naming the pass, the architecture and the reason.
    """
    for c in configs:
        if (reason := c.unsupported(model)) is not None:
            raise PassError(f"pass {c.label()!r} can't handle this {model_type(model)} model: {reason}")


def unavailable(config: PassConfig) -> list[str]:
    """Why this machine can't run the pass (empty when it can)."""
    return config.missing()


def gguf_source(info: Any) -> Path | None:
    """The .gguf file a model was loaded from (its ``ModelInfo.path``), or None."""
    path = getattr(info, "path", None)
    return Path(path) if path and str(path).endswith(".gguf") and Path(path).is_file() else None


def apply_(
    loaded: Any,
    configs: PassConfig | list[PassConfig],
    context: PassContext | None = None,
    copy_model: bool = True,
) -> tuple[Any, list[PassReport]]:
    """Apply passes in order to a loaded model.

    Args:
        loaded: an ``unbottle.sources.Loaded``.
        configs: one pass config or a list, applied in order.
        context: tokenizer, calibration data and seed for handlers that need them.
        copy_model: work on a deep copy so ``loaded`` stays the untouched baseline.

    Returns:
        The new ``Loaded`` and one report per pass.

    Raises:
        ConfigError: an impossible composition. PassError: a pass this machine can't run, or one
            that failed.
    """
    configs = [configs] if isinstance(configs, PassConfig) else list(configs)
    check_composition(configs)
    for c in configs:
        if reasons := unavailable(c):
            raise PassError(f"pass {c.name!r} can't run on this machine: {'; '.join(reasons)}")
    check_supported(loaded.model, configs)
    context = dataclasses.replace(
        context or PassContext(tokenizer=loaded.tokenizer), task=loaded.info.task, head=loaded.info.head
    )
    if context.source is None and (source := gguf_source(loaded.info)) is not None:
        context = dataclasses.replace(context, source=source)
    model = copy.deepcopy(loaded.model) if copy_model else loaded.model
    reports = []
    for c in configs:
        model, report = _apply_one(model, c, context)
        reports.append(report)
    info = copy.deepcopy(loaded.info)
    info.notes.append("passes: " + " → ".join(c.label() for c in configs))
    if reports:
        info.n_parameters = reports[-1].params_after
        first = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        info.dtype = str(first.dtype).removeprefix("torch.") if first is not None else info.dtype
    return Loaded(model=model, tokenizer=loaded.tokenizer, info=info), reports


def _apply_one(model: Any, config: PassConfig, context: PassContext) -> tuple[Any, PassReport]:
    handler = HANDLERS.get(type(config))
    if handler is None:  # the module registers its handler on import
        importlib.import_module(type(config).__module__)
        handler = HANDLERS[type(config)]
    params_before, bytes_before = model_size(model)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            result = handler(model, config, context)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        raise PassError(f"pass {config.label()!r} failed: {type(exc).__name__}: {exc}") from exc
    params_after, bytes_after = model_size(result.model)
    report = PassReport(
        name=config.name,
        config=config.to_dict(),
        touched=result.touched,
        skipped=result.skipped,
        params_before=params_before,
        params_after=params_after,
        bytes_before=bytes_before,
        bytes_after=bytes_after,
        seconds=time.perf_counter() - start,
        notes=result.notes,
    )
    return result.model, report
