"""Printing a stored run: the same view right after a verb finishes and from ``unbottle runs show``.

Everything shown is rebuilt from what the store holds (raw samples, per-sample scores, per-round
values), so a later ``runs show`` prints what the verb printed.
"""

from __future__ import annotations

from typing import Any

from unbottle.cli.common import err, out, print_json


def show_run(store: Any, ref: int | str, json_: bool) -> None:
    """Print a stored run's tables and, with ``json_``, its JSON document as the last stdout line."""
    from unbottle.reporting.console import headline_table, key_value_table, measurements_tables
    from unbottle.reporting.documents import run_document

    run = store.get_run(ref)
    measurements = store.measurements(run.id)
    doc = run_document(run, measurements)
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
    if run.kind == "bench":
        out.print(headline_table(doc["headline"]))
        for table in measurements_tables(measurements):
            out.print(table)
    elif run.kind == "eval":
        from unbottle.evaluation import EvalResult
        from unbottle.reporting.evals import evals_table

        out.print(evals_table([EvalResult.from_dict(e) for e in (run.result or {}).get("evals", [])]))
    elif run.kind in ("ab", "compare") and doc.get("comparison"):
        from unbottle.reporting.comparison import comparison_table

        out.print(comparison_table(doc["comparison"]))
    elif run.kind == "optimize" and doc.get("optimize"):
        _show_optimize(doc["optimize"])
    elif run.kind == "profile" and doc.get("profile"):
        show_profile(doc["profile"])
    for note in doc["notes"]:
        out.print(f"note: {note}", highlight=False)
    if run.error:
        err.print(f"run ended with: {run.error}", highlight=False)
    if json_:
        print_json(doc)


def _show_optimize(opt: dict[str, Any]) -> None:
    from unbottle.reporting.comparison import comparison_table
    from unbottle.reporting.optimize import pareto_table, trials_table

    table, notes = trials_table(opt)
    out.print(table)
    for note in notes:
        out.print(f"  {note}", highlight=False)
    out.print(pareto_table(opt))
    if opt.get("verification"):
        out.print(comparison_table(opt["verification"]))
    if opt.get("resumed_trials"):
        out.print(f"resumed: {opt['resumed_trials']} trial(s) were recorded earlier and not repeated")
    out.print(f"verdict: {opt['verdict']}", highlight=False)
    if opt.get("output"):
        out.print(
            f"saved to {opt['output']}; check it independently with `unbottle ab {opt['model']} "
            f"{opt['output']} --eval` and `unbottle eval {opt['output']}`",
            highlight=False,
        )


def show_profile(doc: dict[str, Any]) -> None:
    from unbottle.reporting.profile import (
        findings_table,
        groups_table,
        ops_table,
        peaks_table,
        roofline_table,
    )

    out.print(peaks_table(doc["peaks"]))
    for phase, data in doc["phases"].items():
        out.print(groups_table(phase, data))
        out.print(ops_table(phase, data))
    out.print(roofline_table(doc))
    out.print(findings_table(doc["diagnosis"]))
    for path in doc["traces"]:
        out.print(f"trace: {path} (open in https://ui.perfetto.dev or chrome://tracing)", highlight=False)
