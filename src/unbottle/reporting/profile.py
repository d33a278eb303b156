"""Console tables of a profile: peaks, module groups, top operators, roofline, findings."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _table(title: str, *cols: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for c in cols:
        table.add_column(c)
    return table


def peaks_table(peaks: dict[str, Any]) -> Table:
    table = _table(
        f"machine peaks ({peaks['threads']} thread(s), measured {peaks['measured_at']})", "what", "value"
    )
    table.add_row("memory read bandwidth", f"{peaks['bandwidth_gbps']:.1f} GB/s")
    for dtype, v in peaks["matmul_gflops"].items():
        table.add_row(f"matmul {dtype}", f"{v:.0f} {'GOP/s' if dtype == 'int8' else 'GFLOP/s'}")
    return table


def groups_table(phase: str, data: dict[str, Any]) -> Table:
    wall = data["wall_s"]
    table = _table(f"{phase}: time by module group (wall {wall * 1e3:.1f} ms)", "group", "ms", "% of wall")
    for group, seconds in sorted(data["groups"].items(), key=lambda kv: -kv[1]):
        table.add_row(group, f"{seconds * 1e3:.2f}", f"{100 * seconds / wall:.1f}")
    table.add_row(
        "inside operators (all groups)",
        f"{data['kernel_s'] * 1e3:.2f}",
        f"{100 * data['kernel_s'] / wall:.1f}",
    )
    return table


def ops_table(phase: str, data: dict[str, Any]) -> Table:
    table = _table(f"{phase}: top operators (profiled)", "op", "input shapes", "calls", "self ms", "GFLOP")
    for op in data["ops"][:8]:
        table.add_row(
            op["op"], op["shapes"], str(op["calls"]), f"{op['self_s'] * 1e3:.2f}", f"{op['flops'] / 1e9:.3f}"
        )
    return table


def roofline_table(doc: dict[str, Any]) -> Table:
    table = _table(
        "roofline",
        "phase",
        "tokens/s",
        "GFLOP/s",
        "GB/s",
        "FLOP/byte",
        "MFU",
        "MBU",
        "outside kernels",
        "bound",
    )
    for phase, r in doc["roofline"].items():
        table.add_row(
            phase,
            f"{r['tokens_per_s']:.1f}",
            f"{r['achieved_gflops']:.1f}",
            f"{r['achieved_gbps']:.2f}",
            f"{r['intensity']:.1f} (ridge {r['ridge']:.1f})",
            f"{r['mfu']:.1%}",
            f"{r['mbu']:.1%}",
            f"{r['overhead_fraction']:.0%}",
            r["bound"],
        )
    c = doc["decode_ceilings"]
    table.caption = "decode ceiling (bandwidth / bytes read per token): " + ", ".join(
        f"{k} {v:.0f} tok/s" for k, v in c.items()
    )
    return table


def findings_table(diagnosis: dict[str, Any]) -> Table:
    table = _table(
        "diagnosis (ranked by time above the roofline per request)", "#", "finding", "cost ms", "try"
    )
    for i, f in enumerate(diagnosis["findings"], start=1):
        recs = (
            "; ".join(f"{r['candidate']} (≤{r['gain']:.1f}x: {r['why']})" for r in f["recommendations"])
            or "-"
        )
        table.add_row(str(i), f["text"], f"{f['cost_s'] * 1e3:.0f}", recs)
    return table
