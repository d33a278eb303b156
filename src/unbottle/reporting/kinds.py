"""What each kind of run says in a report: its verdict, headline numbers and tables, as plain text.

One function per kind fills a ``Report`` from the run's stored document. Kinds this module does not
know (and runs whose result is missing or shaped differently, e.g. a failed run or one written by a
newer unbottle) fall back to ``generic``: the config and the result's fields as recorded.
Optimisation, profile and training runs are in ``unbottle.reporting.kinds_work``.
"""

from __future__ import annotations

from unbottle.reporting.console import fmt
from unbottle.reporting.parts import Report, Stat, TableData
from unbottle.reporting.tables import (
    VERDICT_TONE,
    ci_text,
    comparison_tables,
    comparison_verdict,
    flatten,
    headline_stat,
    measurement_tables,
    ratio_text,
)


def bench(report: Report) -> bool:
    head = report.document.get("headline") or {}
    if not report.measurements:
        return False
    for d in head.get("decode", []):
        b = d["batch_size"]
        report.headline.append(headline_stat(f"decode tokens/s, batch {b}", d["tokens_per_s"], "tok/s"))
        if d.get("token_latency_s"):
            report.headline.append(
                headline_stat(f"token latency, batch {b}", d["token_latency_s"], "ms", 1000)
            )
        if d.get("ttft_s"):
            report.headline.append(headline_stat(f"time to first token, batch {b}", d["ttft_s"], "ms", 1000))
    for p in head.get("prefill", []):
        report.headline.append(
            headline_stat(f"prefill tokens/s, {p['prompt_length']} tokens", p["tokens_per_s"], "tok/s")
        )
    for g in head.get("generate", []):
        report.headline.append(
            headline_stat(f"generate tokens/s, batch {g['batch_size']}", g["tokens_per_s"], "tok/s")
        )
    if head.get("peak_rss_mib") is not None:
        report.headline.append(Stat("peak RSS", f"{fmt(head['peak_rss_mib'])} MiB"))
    first = next((s for s in report.headline if s.label.startswith("decode")), None) or (
        report.headline[0] if report.headline else None
    )
    report.verdict = (
        f"{report.run.model}: {first.label} {first.value} (median, 95% CI {first.ci})"
        if first
        else f"{report.run.model}: {len(report.measurements)} measurements"
    )
    report.tables += measurement_tables(report.measurements)
    return True


def evals(report: Report) -> bool:
    evals = report.document.get("evals") or []
    if not evals:
        return False
    rows = []
    for e in evals:
        low, high = e["ci95"]
        report.headline.append(Stat(e["metric"], fmt(e["value"]), ci_text(low, high)))
        d = e.get("details") or {}
        keys = ("eval_tokens", "window", "stride", "bos_prepended", "task", "n_items", "length_normalize")
        how = ", ".join(f"{k}={d[k]}" for k in keys if k in d)
        rows.append(
            (
                e["metric"],
                fmt(e["value"]),
                ci_text(low, high),
                str(e["n_samples"]),
                f"{e['seconds']:.1f}",
                how,
            )
        )
    first = evals[0]
    report.verdict = (
        f"{report.run.model}: {first['metric']} {fmt(first['value'])} "
        f"(95% CI {ci_text(*first['ci95'])}, over {first['n_samples']} samples)"
    )
    columns = ("metric", "value", "95% CI", "samples", "seconds", "how")
    report.tables.append(TableData("evaluation (95% CI over samples)", columns, tuple(rows)))
    return True


def comparison(report: Report) -> bool:
    doc = report.document.get("comparison")
    if not doc:
        return False
    report.verdict = comparison_verdict(doc)
    for name, m in doc["metrics"].items():
        point, ci = ratio_text(m["ratio"])
        report.headline.append(Stat(f"{name} B/A", point, ci, VERDICT_TONE.get(m["verdict"], "")))
    report.tables += comparison_tables(doc)
    report.notes += [f"caveat: {c}" for c in doc.get("caveats") or []]
    return True


def generic(report: Report) -> None:
    """Config and result fields as recorded, for kinds without a dedicated view."""
    run = report.run
    if not report.verdict:
        report.verdict = f"{run.kind} run of {run.model}: {report.status}"
    config = flatten(run.config or {})
    if config:
        report.tables.append(TableData("config", ("field", "value"), tuple(config)))
    result = flatten({k: v for k, v in report.result.items() if k not in ("model", "threads", "notes")})
    if result:
        report.tables.append(TableData("result (as recorded)", ("field", "value"), tuple(result)))
    if report.measurements:
        report.tables += measurement_tables(report.measurements)
