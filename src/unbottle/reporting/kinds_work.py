"""What a profile and a training run say in a report (see ``unbottle.reporting.kinds``; an optimisation's
is in ``unbottle.reporting.kinds_optimize``).

Training results are read defensively: the training code grows new fields (communication time, a
diagnosis, distillation), and a report of an older or newer run shows what it finds and skips the rest.
"""

from __future__ import annotations

import statistics
from typing import Any

from unbottle.reporting.console import fmt
from unbottle.reporting.parts import Report, Stat, TableData
from unbottle.reporting.tables import flatten, ratio_text


def accuracy_text(change: dict[str, Any] | None, with_ci: bool = True) -> tuple[str, str]:
    """(``ppl +0.53%``, ``+0.19 – +0.86``) of an accuracy change; perplexity in %, accuracy in points,
    an encoder's embedding cosine as a difference."""
    if not change:
        return "-", ""
    shapes = {
        "perplexity": ("%", "ppl", 2),
        "embedding_cosine": ("", "cos", 4),
        "pseudo_perplexity": ("%", "pppl", 2),
    }
    unit, name, digits = shapes.get(change["metric"], (" pt", "acc", 2))
    ci = f"{change['ci_low']:+.{digits}f} – {change['ci_high']:+.{digits}f}" if with_ci else ""
    shown = f"{name} {change['point']:+.{digits}f}{unit}"
    return shown, ci if change["ci_low"] != change["ci_high"] else ""


def profile(report: Report) -> bool:
    doc = report.document.get("profile")
    if not doc:
        return False
    findings = (doc.get("diagnosis") or {}).get("findings") or []
    report.verdict = findings[0]["text"] if findings else "no finding above the roofline"
    for phase, r in doc["roofline"].items():
        report.headline.append(Stat(f"{phase} tokens/s", fmt(r["tokens_per_s"])))
        report.headline.append(
            Stat(f"{phase} MFU / MBU", f"{r['mfu']:.1%} / {r['mbu']:.1%}", note=r["bound"])
        )
    peaks = doc["peaks"]
    rows = [("memory read bandwidth", f"{peaks['bandwidth_gbps']:.1f} GB/s")]
    rows += [
        (f"matmul {dtype}", f"{v:.0f} {'GOP/s' if dtype == 'int8' else 'GFLOP/s'}")
        for dtype, v in peaks["matmul_gflops"].items()
    ]
    title = f"machine peaks ({peaks.get('threads', '?')} thread(s), measured {peaks.get('measured_at', '?')})"
    report.tables.append(TableData(title, ("what", "value"), tuple(rows)))
    report.tables.append(_roofline_table(doc))
    for phase, data in doc["phases"].items():
        ops = tuple(
            (o["op"], o["shapes"], str(o["calls"]), f"{o['self_s'] * 1e3:.2f}", f"{o['flops'] / 1e9:.3f}")
            for o in data.get("ops", [])[:8]
        )
        columns = ("op", "input shapes", "calls", "self ms", "GFLOP")
        report.tables.append(TableData(f"{phase}: top operators (profiled)", columns, ops))
    if findings:
        report.tables.append(_findings_table(findings))
    report.notes += [f"trace: {t} (open in Perfetto or chrome://tracing)" for t in doc.get("traces", [])]
    return True


def _roofline_table(doc: dict[str, Any]) -> TableData:
    rows = tuple(
        (
            phase,
            f"{r['tokens_per_s']:.1f}",
            f"{r['achieved_gflops']:.1f}",
            f"{r['achieved_gbps']:.2f}",
            f"{r['intensity']:.2f} (ridge {r['ridge']:.1f})",
            f"{r['mfu']:.1%}",
            f"{r['mbu']:.1%}",
            f"{r['overhead_fraction']:.0%}",
            r["bound"],
        )
        for phase, r in doc["roofline"].items()
    )
    columns = ("phase", "tokens/s", "GFLOP/s", "GB/s", "FLOP/byte", "MFU", "MBU", "outside kernels", "bound")
    ceilings = doc.get("decode_ceilings") or {}
    caption = "decode ceiling (bandwidth / bytes read per token): " + ", ".join(
        f"{k} {v:.0f} tok/s" for k, v in ceilings.items()
    )
    return TableData("roofline", columns, rows, caption if ceilings else "")


def _findings_table(findings: list[dict[str, Any]]) -> TableData:
    rows = []
    for i, f in enumerate(findings, start=1):
        recs = "; ".join(
            f"{r['candidate']} (≤{r['gain']:.1f}x: {r['why']})" for r in f.get("recommendations", [])
        )
        rows.append((str(i), f["text"], f"{f['cost_s'] * 1e3:.0f}", recs or "-"))
    return TableData(
        "diagnosis (ranked by time above the roofline)", ("#", "finding", "cost ms", "try"), tuple(rows)
    )


def breakdown_seconds(summary: dict[str, Any]) -> dict[str, float]:
    """The step-time split in seconds per step, whether stored as fractions of a step or as seconds."""
    parts = {k: float(v) for k, v in (summary.get("breakdown") or {}).items() if isinstance(v, (int, float))}
    step = summary.get("step_s")
    if parts and step and abs(sum(parts.values()) - 1.0) < 0.05:
        return {k: v * float(step) for k, v in parts.items()}
    return parts


def train(report: Report) -> bool:
    result = report.result
    if isinstance(result.get("compare"), dict):
        return _train_compare(report, result["compare"])
    summary = result.get("summary")
    if not isinstance(summary, dict):
        return False
    facts = {
        "tokens/s (median step)": fmt(summary.get("tokens_per_s")),
        "step time": f"{summary['step_s'] * 1e3:.1f} ms" if summary.get("step_s") else None,
        "loss": f"{summary['first_loss']:.3f} → {summary['last_loss']:.3f}"
        if "last_loss" in summary
        else None,
        "MFU": f"{summary['mfu']:.1%}" if summary.get("mfu") is not None else None,
        "peak RSS": f"{fmt(summary['peak_rss_mib'])} MiB" if summary.get("peak_rss_mib") else None,
    }
    validation = [v for v in result.get("validation") or [] if isinstance(v, dict)]
    if validation and validation[-1].get("val_perplexity") is not None:
        facts["validation perplexity"] = (
            f"{validation[-1]['val_perplexity']:.2f} (step {validation[-1]['step']})"
        )
    report.headline += [Stat(k, v) for k, v in facts.items() if v]
    steps = summary.get("steps", "?")
    report.verdict = f"{steps} steps of {report.run.model}: " + "; ".join(
        f"{k} {v}" for k, v in facts.items() if v and k in ("tokens/s (median step)", "loss")
    )
    _train_diagnosis(report, result.get("diagnosis"))
    parts = breakdown_seconds(summary)
    if parts:
        total = sum(parts.values()) or 1.0
        rows = tuple((k.removesuffix("_s"), f"{v * 1e3:.2f}", f"{v / total:.0%}") for k, v in parts.items())
        report.tables.append(TableData("step time by part", ("part", "ms per step", "share"), rows))
    if validation:
        rows = tuple(
            (str(v.get("step")), fmt(v.get("val_loss")), fmt(v.get("val_perplexity"))) for v in validation
        )
        report.tables.append(TableData("validation", ("step", "loss", "perplexity"), rows))
    shown = ("summary", "history", "validation", "model", "threads", "diagnosis")
    extra = {k: v for k, v in result.items() if k not in shown}
    if extra:
        report.tables.append(TableData("run details", ("field", "value"), tuple(flatten(extra))))
    return True


def _train_diagnosis(report: Report, diagnosis: Any) -> None:
    """Where a step's time goes and what to try: a table of findings, the first one in the verdict."""
    if diagnosis is None:
        return
    findings = diagnosis if isinstance(diagnosis, list) else [diagnosis]
    if not all(isinstance(d, dict) and "text" in d for d in findings):
        report.notes.append(f"diagnosis: {_plain(diagnosis)}")
        return
    rows = tuple(
        (
            str(d["text"]),
            f"{d['share']:.0%}" if isinstance(d.get("share"), (int, float)) else "-",
            "; ".join(str(t) for t in d.get("try") or []) or "-",
        )
        for d in findings
    )
    report.tables.insert(0, TableData("diagnosis", ("finding", "share of a step", "try"), rows))
    if findings:
        report.verdict += f"; {findings[0]['text']}"


def _train_compare(report: Report, doc: dict[str, Any]) -> bool:
    ref = doc.get("reference", "?")
    strategies = {n: e for n, e in (doc.get("strategies") or {}).items() if isinstance(e, dict)}
    rows, ratios = [], {}
    for name, e in strategies.items():
        speed = e.get("speed") or {}
        ratio, ci = "-", ""
        if speed.get("pct"):
            ratios[name] = {k: 1 + speed["pct"][k] / 100 for k in ("point", "ci_low", "ci_high")}
            ratio, ci = ratio_text(ratios[name])
            tone = {"better": "good", "worse": "bad"}.get(speed.get("verdict"), "neutral")
            report.headline.append(Stat(f"{name} tokens/s × {ref}", ratio, ci, tone))  # type: ignore[arg-type]
        rows.append((name, *_strategy_cells(e), ratio, ci))
    best = max(ratios, key=lambda n: ratios[n]["point"], default=None)
    report.verdict = f"strategies compared against {ref}"
    if best is not None:
        point, ci = ratio_text(ratios[best])
        lead = "fastest" if ratios[best]["point"] > 1 else f"no strategy beat {ref}; closest"
        report.verdict = f"{lead} against {ref}: {best} {point} tokens/s (95% CI {ci})"
    flagged = [n for n, e in strategies.items() if (e.get("loss_change") or {}).get("flagged")]
    if flagged:
        report.verdict += f"; loss changed for {', '.join(flagged)}"
    columns = (
        "strategy",
        "tokens/s (median)",
        "loss, last segment vs ref",
        "final loss",
        f"× {ref}",
        "95% CI",
    )
    title = f"training strategies, interleaved (reference: {ref})"
    report.tables.append(TableData(title, columns, tuple(rows)))
    return True


def _strategy_cells(e: dict[str, Any]) -> tuple[str, str, str]:
    """Median tokens/s, the loss change against the reference, and the final loss of one strategy."""
    lc = e.get("loss_change") or {}
    loss = "-"
    if "pct" in lc:
        loss = f"{lc['pct']:+.2f}% [{lc['ci_low']:+.2f}, {lc['ci_high']:+.2f}]"
        loss += " CHANGED" if lc.get("flagged") else ""
    tps = e.get("tokens_per_s") or []
    losses = e.get("losses") or []
    return fmt(statistics.median(tps)) if tps else "-", loss, fmt(losses[-1]) if losses else "-"


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_plain(v) for v in value)
    return str(value)
