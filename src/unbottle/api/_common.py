"""What the verbs share: the store they record in, a silent progress, settings into a config."""

from __future__ import annotations

import dataclasses
from typing import Any

from unbottle.core.errors import ConfigError
from unbottle.reporting.documents import run_document
from unbottle.store import Store


class _Quiet:
    """A task of ``Silent``: every update is dropped."""

    def update(self, *args: Any, **kwargs: Any) -> None: ...
    def advance(self, *args: Any, **kwargs: Any) -> None: ...
    def tick(self) -> None: ...
    def done(self) -> None: ...


class Silent:
    """The progress a verb reports to when the caller gives none (the CLI gives its bars).

    The interface a verb may call: ``message(text)``, ``task(label, total, unit, ...)`` → a task with
    ``update``/``advance``/``tick``/``done``, and ``evaluations(prefix)`` and ``counter(label)`` →
    callbacks or None. ``bench`` also calls a callable progress as ``(label, repeats, elapsed_s)``.
    """

    def message(self, text: str) -> None: ...

    def task(self, *args: Any, **kwargs: Any) -> _Quiet:
        return _Quiet()

    def evaluations(self, prefix: str = "") -> None:
        return None

    def counter(self, label: str, unit: str = "") -> None:
        return None


def store_of(store: Any) -> Any:
    """``store`` itself, or the default store (``$UNBOTTLE_HOME``, else ``./.unbottle``)."""
    if store is not None:
        return store

    return Store()


def config_of(kind: type, config: Any, settings: dict[str, Any]) -> Any:
    """``config`` as given, or ``kind(**settings)``; both at once, or an unknown setting, is refused
    naming the fields ``kind`` takes."""
    if config is not None:
        if settings:
            raise ConfigError(
                f"both config= and settings {sorted(settings)} given; pass one: a {kind.__name__}, or "
                "its fields as keyword arguments"
            )
        return config
    fields = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} given; {kind.__name__} takes: {', '.join(fields)}")
    return kind(**settings)


def document(store: Any, run_id: int) -> dict[str, Any]:
    """The run's JSON document, as ``--json`` prints it and ``unbottle runs show`` rebuilds it."""
    return run_document(store.get_run(run_id), store.measurements(run_id))
