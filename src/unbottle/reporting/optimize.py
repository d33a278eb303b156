"""Console tables of an ``unbottle optimize`` result: the trials, the Pareto front, the verdict."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from unbottle.optimizer.candidates import short_key
from unbottle.reporting.kinds_work import accuracy_text


def _ci(values: Any, fmt: str = "×{:.2f}", point_only: bool = False) -> str:
    """``×1.23 [1.19, 1.27]``; ``point_only`` for screening, whose few rounds give no trustworthy
    interval (see ``comparison.speed.MIN_ROUNDS``)."""
    if not values:
        return "-"
    point, low, high = values
    return fmt.format(point) if point_only else f"{fmt.format(point)} [{low:.2f}, {high:.2f}]"


def _accuracy(change: dict[str, Any] | None, with_ci: bool) -> str:
    shown, ci = accuracy_text(change, with_ci)
    return f"{shown} [{ci.replace(' – ', ', ')}]" if ci else shown


def trials_table(doc: dict[str, Any]) -> tuple[Table, list[str]]:
    """The trials (one row each) and the reasons for those that were slower or broke the guard."""
    objective = doc["objective"]["name"]
    table = Table(
        title=f"trials (objective: {doc['objective']['what']}; guard: {', '.join(doc['guard'])}; "
        "screening: point estimates, 2x the guard's limit)",
        title_justify="left",
        header_style="bold",
    )
    for col in (
        "#",
        "candidate",
        "stage",
        "status",
        f"{objective} gain [95% CI]",
        "accuracy Δ",
        "weights MiB",
        "s",
    ):
        table.add_column(col, overflow="fold")
    notes = []
    for i, r in enumerate((r for r in doc["trials"] if r["stage"] != "baseline"), start=1):
        guard = "" if r.get("guard_passed") is None else (" ✓" if r["guard_passed"] else " ✗ guard")
        table.add_row(
            str(i),
            short_key(r.get("candidate") or r["key"]),
            r["stage"],
            r["status"] + guard,
            _ci(r.get("gain")) if r["stage"] != "screen" else _ci(r.get("gain"), point_only=True),
            _accuracy(r.get("accuracy"), with_ci=r["stage"] != "screen"),
            f"{r['weights_mib']:.1f}" if r.get("weights_mib") is not None else "-",
            f"{r['seconds']:.0f}",
        )
        if r.get("explanation"):
            notes.append(f"#{i} {short_key(r.get('candidate') or r['key'])}: " + "; ".join(r["explanation"]))
    for key, why in {**doc["skipped"], **doc["not_tried"]}.items():
        notes.append(f"not tried: {short_key(key)}: {why}")
    return table, notes


def pareto_table(doc: dict[str, Any]) -> Table:
    table = Table(
        title="Pareto front (speed ↑, accuracy loss ↓, weights ↓; the guard is not applied here)",
        title_justify="left",
        header_style="bold",
    )
    for col in ("candidate", "gain", "accuracy loss", "weights MiB", "measured at", "meets guard"):
        table.add_column(col)
    front = set(doc["pareto"]["front"])
    for p in doc["pareto"]["points"]:
        if p["key"] in front:
            guard = p.get("guard_passed")
            table.add_row(
                short_key(p["key"]),
                f"×{p['gain']:.2f}",
                f"{p['loss']:+.2f}",
                f"{p['weights_mib']:.1f}",
                p.get("stage", "-"),
                "-" if guard is None else ("yes" if guard else "no"),
            )
    return table
