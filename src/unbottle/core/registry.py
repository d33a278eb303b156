"""A generic name → object registry with lazy ``"module:attr"`` entries.

Heavy optional backends register by import path and are imported only when asked for; an unknown
name answers with close matches and the full list, so choice lists never get retyped in messages.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from unbottle.core.errors import ConfigError, UnbottleError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects or to lazy ``"package.module:attr"`` import paths."""

    def __init__(self, what: str, error: type[UnbottleError] = ConfigError) -> None:
        self.what = what
        self._error = error
        self._entries: dict[str, T | str] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, target: T | str, help: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = target
        self._help[name] = help

    def decorator(self, name: str, help: str = "") -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            self.register(name, obj, help)
            return obj

        return wrap

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise self._error(self.unknown_message(name))
        target = self._entries[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._entries[name] = target
        return target

    def unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        return f"unknown {self.what} {name!r}; {hint}available: {', '.join(names)}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
