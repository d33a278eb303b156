"""The pass registry and the text form of a pass on the command line (``name:key=value,...``).

Entries are lazy ``"module:ConfigClass"`` paths: a backend (torchao, onnxruntime) is imported only
when its pass is used or listed in detail.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from unbottle.core.errors import ConfigError
from unbottle.core.registry import Registry
from unbottle.passes.base import PassConfig

PASSES: Registry[type[PassConfig]] = Registry("pass")

_ENTRIES = {
    "precision": "unbottle.passes.precision:PrecisionConfig",
    "dynamic-int8": "unbottle.passes.quantize:DynamicInt8Config",
    "wo-int8": "unbottle.passes.quantize:WeightOnlyInt8Config",
    "wo-int4": "unbottle.passes.quantize:WeightOnlyInt4Config",
    "static-int8": "unbottle.passes.quantize:StaticInt8Config",
    "prune": "unbottle.passes.prune:MagnitudePruneConfig",
    "prune-structured": "unbottle.passes.prune_structured:StructuredPruneConfig",
    "lowrank": "unbottle.passes.lowrank:LowRankConfig",
    "compile": "unbottle.passes.compile:CompileConfig",
    "onnx": "unbottle.passes.onnx:OnnxExportConfig",
    "genai": "unbottle.passes.genai:GenaiConfig",
}
for _name, _target in _ENTRIES.items():
    PASSES.register(_name, _target)


def config_class(name: str) -> type[PassConfig]:
    """The config class of pass ``name`` (imports its module, which registers the handler)."""
    return PASSES.get(name)


def parse_pass(text: str) -> PassConfig:
    """Parse ``name`` or ``name:key=value,key=value``; lists are written ``a|b``.

    Raises:
        ConfigError: unknown pass (with close matches), unknown key (with the allowed ones), or a
            value of the wrong type.
    """
    name, _, args = text.partition(":")
    cls = config_class(name.strip())
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in args.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in fields:
            allowed = ", ".join(f"{k}=<{_type_name(hints[k])}>" for k in fields) or "(no parameters)"
            raise ConfigError(f"pass {name!r}: {item!r} given; allowed: {allowed}")
        values[key] = _coerce(name, key, raw.strip(), hints[key])
    return cls(**values)


def _coerce(name: str, key: str, raw: str, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if raw.lower() in ("none", "null", ""):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin is tuple:
            return tuple(_coerce(name, key, part, args[0]) for part in raw.split("|") if part)
        if origin is typing.Literal:
            return raw
        if hint is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        return hint(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"pass {name!r}: {key}={raw!r} is not a valid {_type_name(hint)}") from None


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or none"
    if origin is tuple:
        return f"{_type_name(args[0])}|..."
    return getattr(hint, "__name__", str(hint))


def describe_params(cls: type[PassConfig]) -> str:
    """``key=default (type)`` for every field, for ``unbottle passes``."""
    hints = typing.get_type_hints(cls)
    return (
        ", ".join(
            f"{f.name}={_default_text(f.default)} ({_type_name(hints[f.name])})"
            for f in dataclasses.fields(cls)
        )
        or "-"
    )


def _default_text(value: Any) -> str:
    return "|".join(map(str, value)) if isinstance(value, tuple) else str(value)
