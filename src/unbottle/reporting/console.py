"""Rich tables built from raw measurements; the same code renders a fresh run and a stored one."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from unbottle.core.measurement import Measurement
from unbottle.stats import summarize

# Display scaling: seconds read better as milliseconds in a table.
_DISPLAY = {"s": ("ms", 1000.0), "tokens/s": ("tok/s", 1.0)}


def fmt(value: float | None, digits: int = 4) -> str:
    """Compact number: 4 significant digits, no scientific notation for ordinary ranges."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def measurements_tables(measurements: list[Measurement]) -> list[Table]:
    """One table per scenario point (scenario + params), in measured order."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        params = " ".join(f"{k}={v}" for k, v in m.params.items())
        groups.setdefault((m.scenario, params), []).append(m)
    return [
        measurements_table(ms, title=f"{scenario}  {params}") for (scenario, params), ms in groups.items()
    ]


def measurements_table(measurements: list[Measurement], title: str = "") -> Table:
    """One row per measurement: percentiles, mean and the 95% CI of the median, in display units."""
    table = Table(title=title or None, title_justify="left", header_style="bold", title_style="bold")
    table.add_column("metric")
    table.add_column("unit")
    for name in ("n", "p50", "p90", "p99", "mean"):
        table.add_column(name, justify="right")
    table.add_column("95% CI p50", justify="right", no_wrap=True)
    for m in measurements:
        unit, scale = _DISPLAY.get(m.unit, (m.unit, 1.0))
        s = summarize(m.samples)
        ci = f"{fmt(s.ci_low * scale)}–{fmt(s.ci_high * scale)}" if s.n > 1 else "-"
        name = m.name.rsplit(".", 1)[-1]
        table.add_row(
            name,
            unit,
            str(s.n),
            fmt(s.p50 * scale),
            fmt(s.p90 * scale),
            fmt(s.p99 * scale),
            fmt(s.mean * scale),
            ci,
        )
    return table


def headline_table(head: dict[str, Any]) -> Table:
    """The numbers a user reads first: decode tokens/s, latency, TTFT, prefill, memory (medians)."""
    table = Table(
        title="headline (medians, 95% CI)", title_justify="left", header_style="bold", title_style="bold"
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")

    def row(label: str, stat: dict[str, Any] | None, scale: float = 1.0, unit: str = "") -> None:
        if stat:
            lo, hi = stat["ci95"]
            table.add_row(label, f"{fmt(stat['p50'] * scale)} {unit}", f"{fmt(lo * scale)}–{fmt(hi * scale)}")

    for d in head.get("decode", []):
        b = d["batch_size"]
        row(f"decode tokens/s, batch {b}", d["tokens_per_s"], unit="tok/s")
        row(f"decode token latency, batch {b}", d["token_latency_s"], 1000, "ms")
        row(f"time to first token, batch {b}", d["ttft_s"], 1000, "ms")
    for p in head.get("prefill", []):
        row(f"prefill tokens/s, {p['prompt_length']} tokens", p["tokens_per_s"], unit="tok/s")
    for g in head.get("generate", []):
        row(f"generate end-to-end tokens/s, batch {g['batch_size']}", g["tokens_per_s"], unit="tok/s")
    for e in head.get("encode", []):
        at = f"batch {e['batch_size']} × {e['sequence_length']} tokens"
        row(f"encode sequences/s, {at}", e["sequences_per_s"], unit="seq/s")
        row(f"encode latency, {at}", e["latency_s"], 1000, "ms")
    for v in head.get("serve", []):
        at = f"serve {fmt(v['rate'])}/s"
        row(f"{at}: time to first token (p90 {fmt(v['ttft_s']['p90'] * 1000)} ms)", v["ttft_s"], 1000, "ms")
        row(f"{at}: time per output token", v["tpot_s"], 1000, "ms")
        rates = f"{fmt(v['goodput'])} req/s, {fmt(v['throughput'])} tok/s"
        table.add_row(f"{at}: goodput, throughput", rates, "")
    if head.get("peak_rss_mib") is not None:
        table.add_row("peak RSS", f"{fmt(head['peak_rss_mib'])} MiB", "")
    return table


def key_value_table(rows: dict[str, Any], title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in rows.items():
        table.add_row(k, "-" if v is None else str(v))
    return table
