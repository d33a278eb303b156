"""Versioned, validated, JSON round-trippable configuration dataclasses.

Every technique, scenario and run is described by a frozen dataclass that checks itself in
``__post_init__`` and carries a ``version``; what was run can always be written down and replayed.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, TypeVar

from unbottle.core.errors import ConfigError
from unbottle.core.naming import given

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base for all configs: subclasses add fields and validate them in ``__post_init__``."""

    version: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with the config's type name and version."""
        data = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"type": type(self).__name__, "version": self.version, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Rebuild a config from ``to_dict`` output; unknown keys and version mismatches are errors."""
        data = dict(data)
        name, version = data.pop("type", cls.__name__), data.pop("version", cls.version)
        if name != cls.__name__:
            raise ConfigError(f"config of type {name!r} given where {cls.__name__!r} is expected")
        if version != cls.version:
            raise ConfigError(
                f"{cls.__name__} version {version} given; this unbottle reads version {cls.version}"
            )
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown field(s) {unknown} for {cls.__name__}; allowed: {sorted(known)}")
        return cls(**{k: _from_jsonable(v, known[k]) for k, v in data.items()})

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Config):
        return value.to_dict()
    return value


def _from_jsonable(value: Any, field: dataclasses.Field) -> Any:
    # Tuples are written as JSON lists; frozen configs store sequences as tuples.
    if isinstance(value, list):
        return tuple(value)
    return value


def check_at_least(checks: list[tuple[Any, ...]]) -> None:
    """Each ``(field, value, low)`` or ``(field, value, low, flag)``: ``value`` must be an integer (not
    a bool) of at least ``low``.

    ``field`` is the config's field name; ``flag`` how the CLI spells it when that is not ``--`` + the
    field with dashes (ending in ``=`` for a ``key=value`` part, which the value follows directly).

    Raises:
        ConfigError: the first value out of range, naming it and the range allowed.
    """
    for field, value, low, *flag in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            shown = given(field, value, *flag, quote=True)
            raise ConfigError(f"{shown} given; allowed: an integer >= {low}")
