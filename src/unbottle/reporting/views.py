"""What the terminal shows of each kind of run: rich tables and plain lines, built from its document.

``unbottle runs show`` and every verb print a run through these (``run_kinds`` names each kind's view),
so a run shown later reads exactly as it did when it finished. Lines are ``Text``: printed as they are,
never read as markup.
"""

from __future__ import annotations

import statistics
from typing import Any

from rich.table import Table
from rich.text import Text

from unbottle.core.measurement import Measurement
from unbottle.evaluation import EvalResult
from unbottle.reporting.comparison import comparison_table
from unbottle.reporting.console import headline_table, key_value_table, measurements_tables
from unbottle.reporting.evals import evals_table
from unbottle.reporting.optimize import pareto_table, trials_table
from unbottle.reporting.profile import findings_table, groups_table, ops_table, peaks_table, roofline_table


def bench(doc: dict[str, Any], measurements: list[Measurement], result: dict[str, Any]) -> list[Any]:
    return [headline_table(doc["headline"]), *measurements_tables(measurements)]


def evals(doc: dict[str, Any], measurements: list[Measurement], result: dict[str, Any]) -> list[Any]:
    return [evals_table([EvalResult.from_dict(e) for e in result.get("evals", [])])]


def comparison(doc: dict[str, Any], measurements: list[Measurement], result: dict[str, Any]) -> list[Any]:
    if not doc.get("comparison"):
        return []
    caveats = [Text(f"caveat: {c}", style="yellow") for c in doc["comparison"].get("caveats") or []]
    return [comparison_table(doc["comparison"]), *caveats]


def optimize(doc: dict[str, Any], measurements: list[Measurement], result: dict[str, Any]) -> list[Any]:
    opt = doc.get("optimize")
    if not opt:
        return []
    table, notes = trials_table(opt)
    shown: list[Any] = [table, *(Text(f"  {n}") for n in notes), pareto_table(opt)]
    if opt.get("verification"):
        shown.append(comparison_table(opt["verification"]))
    if opt.get("resumed_trials"):
        shown.append(
            Text(f"resumed: {opt['resumed_trials']} trial(s) were recorded earlier and not repeated")
        )
    shown.append(Text(f"verdict: {opt['verdict']}"))
    if opt.get("output"):
        what = "the closest candidate (it missed the guard)" if opt.get("saved_as") == "closest" else "winner"
        check = f"`unbottle ab {opt['model']} {opt['output']} --eval` and `unbottle eval {opt['output']}`"
        shown.append(Text(f"{what} saved to {opt['output']}; check it independently with {check}"))
    return shown


def profile(doc: dict[str, Any], measurements: list[Measurement], result: dict[str, Any]) -> list[Any]:
    prof = doc.get("profile")
    if not prof:
        return []
    shown: list[Any] = [peaks_table(prof["peaks"])]
    for phase, data in prof["phases"].items():
        shown += [groups_table(phase, data), ops_table(phase, data)]
    shown += [roofline_table(prof), findings_table(prof["diagnosis"])]
    shown += [
        Text(f"trace: {p} (open in https://ui.perfetto.dev or chrome://tracing)") for p in prof["traces"]
    ]
    return shown


def train(doc: dict[str, Any], measurements: list[Measurement], result: dict[str, Any]) -> list[Any]:
    if "compare" in result:
        return [compare_table(result["compare"])]
    return training(result) if "summary" in result else []


def training(result: dict[str, Any]) -> list[Any]:
    """One training run: steps, speed, where a step's time went, loss, validation, MFU, diagnosis."""
    s = result["summary"]
    steps = (
        f"{s['steps']} (resumed from step {result['resumed_from']})"
        if result.get("resumed_from")
        else s["steps"]
    )
    table = key_value_table(
        {
            "steps": steps,
            "tokens/s (median step)": f"{s['tokens_per_s']:.0f}",
            "step time": f"{s['step_s'] * 1e3:.1f} ms: "
            + ", ".join(f"{k.removesuffix('_s')} {v:.0%}" for k, v in s["breakdown"].items()),
            "loss": f"{s['first_loss']:.3f} → {s['last_loss']:.3f}",
            "validation": ", ".join(
                f"step {v['step']}: loss {v['val_loss']:.3f}, ppl {v['val_perplexity']:.1f}"
                for v in result.get("validation", [])
            ),
            "MFU": f"{s['mfu']:.1%} of {s['peak_gflops']:.0f} GFLOP/s ({s['peak_dtype']}, measured)",
            "peak RSS": f"{s['peak_rss_mib']:.0f} MiB",
            "saved": result.get("model_dir", "-"),
        }
    )
    tries = [(f, f" → try {', '.join(f['try'])}" if f["try"] else "") for f in result.get("diagnosis", [])]
    return [table, *(Text(f"{f['bound']}: {f['text']}{t}") for f, t in tries)]


def distill(doc: dict[str, Any], measurements: list[Measurement], result: dict[str, Any]) -> list[Any]:
    return [distill_table(result)] if "models" in result else []


def distill_table(result: dict[str, Any]) -> Table:
    """Perplexity of every model on the same held-out windows, and the measured distillation gain."""
    table = Table(
        title=f"held-out perplexity ({result['eval'].get('corpus', 'held-out text')}, "
        f"{result['eval'].get('eval_tokens')} tokens)",
        title_justify="left",
        header_style="bold",
    )
    for col in ("model", "parameters", "perplexity [95% CI]", "tokens/s (training)"):
        table.add_column(col)
    speed = {"distilled student": "distilled", "no-distill student": "no-distill"}
    for name, m in result["models"].items():
        run = result["runs"].get(speed.get(name, ""), {})
        table.add_row(
            name,
            f"{m['parameters'] / 1e6:.1f}M",
            f"{m['perplexity']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]",
            f"{run['tokens_per_s']:.0f}" if run else "-",
        )
    for label, c in result["comparisons"].items():
        p = c["pct"]
        table.caption = (table.caption or "") + (
            f"{label}: perplexity {p['point']:+.1f}% [{p['ci_low']:+.1f}, {p['ci_high']:+.1f}] "
            f"({c['verdict']})\n"
        )
    table.caption_justify = "left"
    return table


def apply(doc: dict[str, Any], measurements: list[Measurement], result: dict[str, Any]) -> list[Any]:
    return [reports_table(result["reports"])] if "reports" in result else []


def reports_table(reports: list[dict[str, Any]]) -> Table:
    """What each pass of an ``apply`` changed."""
    table = Table(title="what each pass changed", title_justify="left", header_style="bold")
    for col in ("pass", "touched", "skipped", "params", "bytes", "seconds", "notes"):
        table.add_column(col)
    for r in reports:
        skipped = "; ".join(f"{k}: {v}" for k, v in list(r["skipped"].items())[:3])
        if len(r["skipped"]) > 3:
            skipped += f" (+{len(r['skipped']) - 3} more)"
        table.add_row(
            r["name"],
            str(len(r["touched"])),
            skipped or "-",
            f"{r['params_before'] / 1e6:.2f}M → {r['params_after'] / 1e6:.2f}M",
            f"{r['bytes_before'] / 2**20:.1f} → {r['bytes_after'] / 2**20:.1f} MiB",
            f"{r['seconds']:.1f}",
            "; ".join(r["notes"]) or "-",
        )
    return table


def compare_table(doc: dict[str, Any]) -> Table:
    """A training-strategy A/B: speed against the reference with its interval, and loss changes."""
    ref = doc["reference"]
    table = Table(
        title=f"training strategies, interleaved (reference: {ref})",
        title_justify="left",
        header_style="bold",
    )
    for col in (
        "strategy",
        "tokens/s (median)",
        f"× {ref} [95% CI]",
        "loss, last segment vs ref",
        "loss after each round",
    ):
        table.add_column(col)
    for name, e in doc["strategies"].items():
        ratio, loss = "-", "-"
        if "speed" in e:
            r = e["speed"]["pct"]
            ratio = f"{1 + r['point'] / 100:.2f} [{1 + r['ci_low'] / 100:.2f}, {1 + r['ci_high'] / 100:.2f}]"
            lc = e["loss_change"]
            loss = f"{lc['pct']:+.2f}% [{lc['ci_low']:+.2f}, {lc['ci_high']:+.2f}]" + (
                " CHANGED" if lc["flagged"] else ""
            )
        rounds, warm = len(e["tokens_per_s"]), doc.get("warmup_steps", 1)
        step = (len(e["losses"]) - warm) // rounds  # warm-up steps, then a segment per round
        curve = " ".join(f"{e['losses'][warm - 1 + step * (r + 1)]:.3f}" for r in range(rounds))
        table.add_row(name, f"{statistics.median(e['tokens_per_s']):.0f}", ratio, loss, curve)
    return table
