"""Text pieces every kind's description shares: display units, interval and ratio text, comparison and
measurement tables, a flattened view of a nested document."""

from __future__ import annotations

from typing import Any

from unbottle.comparison.speed import INDICATIVE
from unbottle.core.measurement import Measurement
from unbottle.reporting.console import fmt
from unbottle.reporting.parts import Stat, TableData, Tone
from unbottle.stats import summarize

# Display scaling: seconds read better as milliseconds.
DISPLAY = {"s": ("ms", 1000.0), "tokens/s": ("tok/s", 1.0)}


VERDICT_TONE: dict[str, Tone] = {
    "better": "good",
    "worse": "bad",
    "no significant difference": "neutral",
    "noise": "neutral",
}


def ci_text(low: float | None, high: float | None, scale: float = 1.0, digits: int = 4) -> str:
    if low is None or high is None:
        return ""
    return f"{fmt(low * scale, digits)} – {fmt(high * scale, digits)}"


def indicative_note(metric: dict[str, Any]) -> str:
    """`` (indicative: n=3)`` for an interval from fewer rounds than its coverage was checked at
    (``comparison.speed.MIN_ROUNDS``); empty otherwise."""
    pct = metric["pct"]
    return f" (indicative: n={pct['n']})" if INDICATIVE in pct.get("method", "") else ""


def ratio_text(ratio: dict[str, Any]) -> tuple[str, str]:
    """(``×1.23``, ``1.19 – 1.27``) of a ratio estimate; no interval for a single measurement."""
    ci = "" if ratio["ci_low"] == ratio["ci_high"] else f"{ratio['ci_low']:.3f} – {ratio['ci_high']:.3f}"
    return f"×{ratio['point']:.3f}", ci


def headline_stat(label: str, summary: dict[str, Any], unit: str, scale: float = 1.0) -> Stat:
    """A headline number from a summary (``p50`` and ``ci95``), scaled to ``unit``."""
    low, high = summary["ci95"]
    return Stat(label, f"{fmt(summary['p50'] * scale)} {unit}", ci_text(low, high, scale))


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
            s = summarize(m.samples)
            ci = ci_text(s.ci_low, s.ci_high, scale) if s.n > 1 else "-"
            values = (s.p50, s.p90, s.p99, s.mean)
            rows.append((m.name, unit or "-", str(s.n), *(fmt(v * scale) for v in values), ci))
        columns = ("metric", "unit", "n", "p50", "p90", "p99", "mean", "95% CI of p50")
        tables.append(TableData(title, columns, tuple(rows)))
    return tables


def comparison_verdict(doc: dict[str, Any]) -> str:
    """One sentence: the goals' outcome, else how many metrics got better or worse."""
    goals = doc.get("goals") or []
    regressions = doc.get("regressions") or []
    worse = f"; worse: {', '.join(regressions)}" if regressions else ""
    if doc.get("indicative_regressions"):
        worse += f"; worse on too few rounds to be sure: {', '.join(doc['indicative_regressions'])}"
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
        ci += indicative_note(m) if ci else ""
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
