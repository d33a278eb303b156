"""What each kind of run says in a report: its verdict, headline numbers and tables, as plain text.

One function per kind fills a ``Report`` from the run's stored document. Kinds this module does not
know (and runs whose result is missing or shaped differently, e.g. a failed run or one written by a
newer unbottle) fall back to ``_generic``: the config and the result's fields as recorded.
Optimisation, profile and training runs are in ``unbottle.reporting.kinds_work``.
"""

from __future__ import annotations

from typing import Any

from unbottle.core.measurement import Measurement
from unbottle.reporting.console import fmt
from unbottle.reporting.summary import Report, Stat, TableData, Tone

# Display scaling: seconds read better as milliseconds.
DISPLAY = {"s": ("ms", 1000.0), "tokens/s": ("tok/s", 1.0)}
VERDICT_TONE: dict[str, Tone] = {
    "better": "good",
    "worse": "bad",
    "no significant difference": "neutral",
    "noise": "neutral",
}


def describe(report: Report) -> None:
    """Fill ``report``'s verdict, headline and tables for its kind (the generic view as fallback)."""
    from unbottle.reporting import kinds_distill, kinds_work

    builders = {
        "bench": _bench,
        "eval": _eval,
        "ab": _comparison,
        "compare": _comparison,
        "optimize": kinds_work.optimize,
        "profile": kinds_work.profile,
        "train": kinds_work.train,
        "distill": kinds_distill.describe,
    }
    builder = builders.get(report.run.kind)
    if builder is not None:
        try:
            if builder(report):
                return
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            report.notes.append(
                f"this {report.run.kind} result has a shape this report does not read "
                f"({type(exc).__name__}: {exc}); its recorded fields are shown as they are"
            )
            report.headline, report.tables = [], []
    _generic(report)


def ci_text(low: float | None, high: float | None, scale: float = 1.0, digits: int = 4) -> str:
    if low is None or high is None:
        return ""
    return f"{fmt(low * scale, digits)} – {fmt(high * scale, digits)}"


def ratio_text(ratio: dict[str, Any]) -> tuple[str, str]:
    """(``×1.23``, ``1.19 – 1.27``) of a ratio estimate; no interval for a single measurement."""
    ci = "" if ratio["ci_low"] == ratio["ci_high"] else f"{ratio['ci_low']:.3f} – {ratio['ci_high']:.3f}"
    return f"×{ratio['point']:.3f}", ci


def _bench(report: Report) -> bool:
    head = report.document.get("headline") or {}
    if not report.measurements:
        return False
    for d in head.get("decode", []):
        b = d["batch_size"]
        report.headline.append(_stat(f"decode tokens/s, batch {b}", d["tokens_per_s"], "tok/s"))
        if d.get("token_latency_s"):
            report.headline.append(_stat(f"token latency, batch {b}", d["token_latency_s"], "ms", 1000))
        if d.get("ttft_s"):
            report.headline.append(_stat(f"time to first token, batch {b}", d["ttft_s"], "ms", 1000))
    for p in head.get("prefill", []):
        report.headline.append(
            _stat(f"prefill tokens/s, {p['prompt_length']} tokens", p["tokens_per_s"], "tok/s")
        )
    for g in head.get("generate", []):
        report.headline.append(
            _stat(f"generate tokens/s, batch {g['batch_size']}", g["tokens_per_s"], "tok/s")
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


def _stat(label: str, stat: dict[str, Any], unit: str, scale: float = 1.0) -> Stat:
    low, high = stat["ci95"]
    return Stat(label, f"{fmt(stat['p50'] * scale)} {unit}", ci_text(low, high, scale))


def measurement_tables(measurements: list[Measurement]) -> list[TableData]:
    """One table per scenario point: n, percentiles, mean and the 95% CI of the median."""
    groups: dict[str, list[Measurement]] = {}
    for m in measurements:
        params = " ".join(f"{k}={v}" for k, v in m.params.items())
        groups.setdefault(f"{m.scenario}  {params}".strip(), []).append(m)
    tables = []
    for title, ms in groups.items():
        rows = []
        for m in ms:
            unit, scale = DISPLAY.get(m.unit, (m.unit, 1.0))
            s = m.summary()
            ci = ci_text(s.ci_low, s.ci_high, scale) if s.n > 1 else "-"
            values = (s.p50, s.p90, s.p99, s.mean)
            rows.append((m.name, unit or "-", str(s.n), *(fmt(v * scale) for v in values), ci))
        columns = ("metric", "unit", "n", "p50", "p90", "p99", "mean", "95% CI of p50")
        tables.append(TableData(title, columns, tuple(rows)))
    return tables


def _eval(report: Report) -> bool:
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


def _comparison(report: Report) -> bool:
    doc = report.document.get("comparison")
    if not doc:
        return False
    report.verdict = comparison_verdict(doc)
    for name, m in doc["metrics"].items():
        point, ci = ratio_text(m["ratio"])
        report.headline.append(Stat(f"{name} B/A", point, ci, VERDICT_TONE.get(m["verdict"], "")))
    report.tables += comparison_tables(doc)
    return True


def comparison_verdict(doc: dict[str, Any]) -> str:
    """One sentence: the goals' outcome, else how many metrics got better or worse."""
    goals = doc.get("goals") or []
    regressions = doc.get("regressions") or []
    worse = f"; worse: {', '.join(regressions)}" if regressions else ""
    if goals:
        explained = "; ".join(g["explanation"] for g in goals)
        return f"goals {doc['overall']}: {explained}{worse}"
    counts: dict[str, int] = {}
    for m in doc["metrics"].values():
        counts[m["verdict"]] = counts.get(m["verdict"], 0) + 1
    tally = ", ".join(f"{v} on {n}" for v, n in counts.items())
    return f"B = {doc['b']} vs A = {doc['a']}: {tally} of {len(doc['metrics'])} metric(s){worse}"


def comparison_tables(doc: dict[str, Any], title: str = "") -> list[TableData]:
    """The metrics (A, B, B/A with 95% CI, verdict) and, when there are goals, the goals."""
    rows = []
    for name, m in doc["metrics"].items():
        unit, scale = DISPLAY.get(m["unit"], (m["unit"], 1.0))
        point, ci = ratio_text(m["ratio"])
        verdict = m["verdict"]
        if m.get("noise_floor_pct") is not None:
            verdict += f" (noise ±{m['noise_floor_pct']:.1f}%)"
        a, b = m["a"]["point"] * scale, m["b"]["point"] * scale
        rows.append((name, f"{fmt(a)} {unit}", f"{fmt(b)} {unit}", point, ci or "measured once", verdict))
    columns = ("metric", "A", "B", "B/A", "95% CI", "verdict")
    tables = [TableData(title or f"B = {doc['b']}  vs  A = {doc['a']}", columns, tuple(rows))]
    goals = doc.get("goals") or []
    if goals:
        goal_rows = tuple(
            (
                f"{g['goal']['metric']}:{g['goal']['kind']}={g['goal']['value']:g}",
                "pass" if g["passed"] else "fail",
                g["explanation"],
            )
            for g in goals
        )
        tables.append(TableData("goals (judged on the 95% CI bound)", ("goal", "result", "why"), goal_rows))
    return tables


def _generic(report: Report) -> None:
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


def flatten(data: dict[str, Any], prefix: str = "", depth: int = 3) -> list[tuple[str, str]]:
    """``(dotted.key, value)`` rows of a nested dict; deep or long values are summarised."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and depth > 1:
            rows += flatten(value, f"{name}.", depth - 1)
        elif isinstance(value, list) and len(value) > 8:
            rows.append((name, f"[{len(value)} items]"))
        else:
            text = f"{value:.6g}" if isinstance(value, float) else str(value)
            rows.append((name, text if len(text) <= 200 else text[:197] + "…"))
    return rows
