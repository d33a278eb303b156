"""Console view of a comparison document: one row per metric, then the goals."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from unbottle.reporting.console import fmt
from unbottle.reporting.tables import indicative_note

_STYLE = {"better": "green", "worse": "red", "no significant difference": "yellow", "noise": "yellow"}
_SHORT = {"no significant difference": "no sig. diff."}
_DISPLAY = {"s": ("ms", 1000.0), "tokens/s": ("tok/s", 1.0)}


def comparison_table(doc: dict[str, Any]) -> Group:
    """Metrics table (A, B, ratio B/A with 95% CI, verdict) plus goal lines and the overall result."""
    table = Table(
        title=f"B = {doc['b']}  vs  A = {doc['a']}",
        title_justify="left",
        header_style="bold",
        title_style="bold",
    )
    table.add_column("metric", no_wrap=True)
    for col in ("A", "B", "B/A", "95% CI"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for name, m in doc["metrics"].items():
        unit, scale = _DISPLAY.get(m["unit"], (m["unit"], 1.0))
        r = m["ratio"]
        verdict = _SHORT.get(m["verdict"], m["verdict"])
        if m.get("noise_floor_pct") is not None:
            verdict += f" (noise ±{m['noise_floor_pct']:.1f}%)"
        table.add_row(
            name,
            f"{fmt(m['a']['point'] * scale)} {unit}",
            f"{fmt(m['b']['point'] * scale)} {unit}",
            f"{r['point']:.3f}",
            _interval(m),
            Text(verdict, style=_STYLE.get(m["verdict"], "")),
        )
    for name, medians in (doc.get("not_compared") or {}).items():
        table.add_row(name, fmt(medians["a"]), fmt(medians["b"]), "-", "zero in a round", "no ratio")
    lines: list[Any] = [table]
    for g in doc.get("goals", []):
        goal = g["goal"]
        mark = ("pass", "green") if g["passed"] else ("fail", "red")
        head = f"goal {goal['metric']}:{goal['kind']}={goal['value']:g} "
        lines.append(Text.assemble(head, mark, f" — {g['explanation']}"))
    regressions = f"; regressions: {', '.join(doc['regressions'])}" if doc["regressions"] else ""
    unsure = doc.get("indicative_regressions") or []
    if unsure:
        regressions += f"; worse on too few rounds to be sure (indicative): {', '.join(unsure)}"
    lines.append(Text.assemble("overall: ", (doc["overall"], "bold"), regressions))
    return Group(*lines)


def _interval(m: dict[str, Any]) -> str:
    """The ratio's 95% interval as shown: none for a single measurement, marked when its n is below
    the one its coverage was checked at."""
    r = m["ratio"]
    if r["ci_low"] == r["ci_high"]:
        return "measured once"
    return f"{r['ci_low']:.3f}–{r['ci_high']:.3f}" + indicative_note(m)
