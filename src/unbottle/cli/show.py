"""Printing a stored run: the same view right after a verb finishes and from ``unbottle runs show``.

Everything shown is rebuilt from what the store holds (raw samples, per-sample scores, per-round
values), so a later ``runs show`` prints what the verb printed. What each kind shows is its view in
``unbottle.reporting.views``, named by its ``run_kinds`` entry.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from unbottle.cli.common import err, out, print_json
from unbottle.reporting.console import key_value_table
from unbottle.reporting.documents import run_document
from unbottle.reporting.run_kinds import kind_of


def show_run(store: Any, ref: int | str, json_: bool, doc: dict[str, Any] | None = None) -> None:
    """Print a stored run's tables and, with ``json_``, its JSON document as the last stdout line.

    ``doc``: the run's document when the caller has it already (a verb returns it), else rebuilt.
    """
    run = store.get_run(ref)
    measurements = store.measurements(run.id)
    doc = doc if doc is not None else run_document(run, measurements)
    info = doc["model"] or {}
    size = f"{info.get('n_parameters', 0) / 1e6:.1f}M params" if info else "-"
    out.print(
        key_value_table(
            {
                "run": f"{run.id} ({run.kind}, {doc['status']})",
                "model": f"{run.model} — {info.get('architecture', '?')}, {size}, {info.get('dtype', '?')}",
                "threads": (doc["threads"] or {}).get("torch_num_threads"),
                "cpu": (run.manifest.get("cpu") or {}).get("model"),
                "started": run.created_at,
            }
        )
    )
    for shown in _view(run, doc, measurements):
        out.print(shown)
    for note in doc["notes"]:
        out.print(f"note: {note}", highlight=False)
    if run.error:
        err.print(f"run ended with: {run.error}", highlight=False)
    if json_:
        print_json(doc)


def _view(run: Any, doc: dict[str, Any], measurements: list[Any]) -> list[Any]:
    """The kind's view; a result of a shape it does not read (older or newer unbottle) says so instead."""
    kind = kind_of(run.kind)
    if kind is None or kind.view is None:
        return []
    try:
        return kind.view(doc, measurements, run.result or {})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        return [
            Text(f"this {run.kind} result has a shape this view does not read ({type(exc).__name__}: {exc})")
        ]
