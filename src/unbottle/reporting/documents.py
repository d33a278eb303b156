"""The JSON documents printed by ``--json`` and rebuilt by ``unbottle runs show``.

They are derived from the stored raw samples, never from numbers cached at run time, so a
document rebuilt later from the store equals the one printed when the run finished.
"""

from __future__ import annotations

from typing import Any

from unbottle.core.measurement import Measurement
from unbottle.reporting.run_kinds import kind_of
from unbottle.stats import summarize

SCHEMA_VERSION = 1


def metric_entry(m: Measurement) -> dict[str, Any]:
    s = summarize(m.samples)
    return {
        "name": m.name,
        "scenario": m.scenario,
        "params": m.params,
        "unit": m.unit,
        "higher_is_better": m.higher_is_better,
        "n": s.n,
        "p50": s.p50,
        "p90": s.p90,
        "p99": s.p99,
        "mean": s.mean,
        "stdev": s.stdev,
        "min": s.min,
        "max": s.max,
        "ci95_median": [s.ci_low, s.ci_high],
    }


def run_document(run: Any, measurements: list[Measurement]) -> dict[str, Any]:
    """The full JSON document of a stored run (``run`` is a ``RunRecord``); its kind adds its fields
    (``run_kinds``)."""
    result = run.result or {}
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.id,
        "kind": run.kind,
        "status": run.effective_status,
        "model_spec": run.model,
        "model": result.get("model"),
        "config": run.config,
        "threads": result.get("threads"),
    }
    kind = kind_of(run.kind)
    if kind is not None:
        doc.update(kind.document(result, measurements))
    doc.update(
        {
            "metrics": [metric_entry(m) for m in measurements],
            "notes": result.get("notes", []),
            "error": run.error,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "manifest": run.manifest,
        }
    )
    return doc
