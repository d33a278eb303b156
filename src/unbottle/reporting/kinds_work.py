"""What an optimisation, a profile and a training run say in a report (see ``unbottle.reporting.kinds``).

Training results are read defensively: the training code grows new fields (communication time, a
diagnosis, distillation), and a report of an older or newer run shows what it finds and skips the rest.
"""

from __future__ import annotations

import statistics
from typing import Any

from unbottle.optimizer.candidates import short_key
from unbottle.reporting.console import fmt
from unbottle.reporting.parts import Report, Stat, TableData
from unbottle.reporting.tables import VERDICT_TONE, comparison_tables, flatten, ratio_text


def accuracy_text(change: dict[str, Any] | None, with_ci: bool = True) -> tuple[str, str]:
    """(``ppl +0.53%``, ``+0.19 – +0.86``) of an accuracy change; perplexity in %, accuracy in points."""
    if not change:
        return "-", ""
    perplexity = change["metric"] == "perplexity"
    unit, name = ("%", "ppl") if perplexity else (" pt", "acc")
    ci = f"{change['ci_low']:+.2f} – {change['ci_high']:+.2f}" if with_ci else ""
    return f"{name} {change['point']:+.2f}{unit}", ci if change["ci_low"] != change["ci_high"] else ""


def optimize(report: Report) -> bool:
    opt = report.document.get("optimize")
    if not opt:
        _recorded_trials(report)
        return False  # the generic view adds the config

    report.verdict = opt["verdict"]
    _optimize_headline(report, opt)
    report.tables.append(_trials_table(opt))
    report.tables.append(_pareto_table(opt))
    if opt.get("verification"):
        report.tables += comparison_tables(
            opt["verification"], "verification: interleaved A/B of the saved model against the baseline"
        )
    for i, r in enumerate((r for r in opt["trials"] if r["stage"] != "baseline"), start=1):
        if r.get("explanation"):
            report.notes.append(
                f"#{i} {short_key(r.get('candidate') or r['key'])}: " + "; ".join(r["explanation"])
            )
    for key, why in {**(opt.get("skipped") or {}), **(opt.get("not_tried") or {})}.items():
        report.notes.append(f"not tried: {short_key(key)}: {why}")
    if opt.get("resumed_trials"):
        report.notes.append(
            f"resumed: {opt['resumed_trials']} trial(s) were recorded earlier and not repeated"
        )
    if opt.get("output"):
        what = "the closest candidate (it missed the guard)" if opt.get("saved_as") == "closest" else "saved"
        report.notes.append(f"{what}: {opt['output']}")
    return True


def _optimize_headline(report: Report, opt: dict[str, Any]) -> None:
    """The winner, its verified gain and accuracy change, the other verified ratios, the search's cost."""
    winner = opt.get("winner")
    if winner:
        g = winner["gain"]
        missed = opt.get("outcome") == "goal-missed"
        label = "closest candidate (goal missed)" if missed else "winner (saved)"
        report.headline.append(Stat(label, short_key(winner["key"]), tone="bad" if missed else ""))
        what = f"{opt['objective']['what']}, winner / baseline"
        report.headline.append(
            Stat(what, f"×{g[0]:.2f}", f"{g[1]:.2f} – {g[2]:.2f}", "good" if g[1] > 1 else "")
        )
        regressed = [r["phase"] for r in winner.get("phases") or [] if r["regressed"]]
        if regressed:
            report.headline.append(
                Stat("slower phase", ", ".join(regressed), tone="bad", note=_workload_text(opt))
            )
        acc, acc_ci = accuracy_text(winner.get("accuracy"))
        tone = "good" if winner.get("guard_passed") else "bad"
        report.headline.append(
            Stat("accuracy change", acc, acc_ci, tone, "guard: " + ", ".join(opt["guard"]))
        )
    skip = {opt["objective"].get("metric"), "perplexity", "accuracy"}
    for name, m in ((opt.get("verification") or {}).get("metrics") or {}).items():
        if name not in skip:
            point, ci = ratio_text(m["ratio"])
            report.headline.append(
                Stat(f"{name}, winner / baseline", point, ci, VERDICT_TONE.get(m["verdict"], ""))
            )
    base = opt.get("baseline") or {}
    if not opt.get("verification") and base.get("weights_mib") is not None:
        report.headline.append(Stat("baseline weights", f"{fmt(base['weights_mib'])} MiB"))
    tried = [r for r in opt["trials"] if r["stage"] != "baseline"]
    spent = f"{opt.get('elapsed_s', 0):.0f} s of a {opt.get('time_budget_s', 0):.0f} s budget"
    report.headline.append(Stat("trials", str(len(tried)), note=spent))
    if opt.get("workload"):
        report.headline.append(Stat("workload", _workload_text(opt).removeprefix("request: ")))


def _workload_text(opt: dict[str, Any]) -> str:
    w = opt.get("workload")
    return f"request: prompt={w['prompt']}, new={w['new']} tokens" if w else ""


def _recorded_trials(report: Report) -> None:
    """An unfinished search: the trials it recorded, which re-running the same command resumes from."""
    trials = [t for t in report.trials.values() if isinstance(t, dict)]
    if not trials:
        return
    rows = tuple(
        (
            str(i),
            short_key(str(t.get("key", "?"))),
            str(t.get("stage", "-")),
            str(t.get("status", "-")),
            f"{t['seconds']:.0f}" if isinstance(t.get("seconds"), (int, float)) else "-",
            str(t.get("reason") or ""),
        )
        for i, t in enumerate(trials, start=1)
    )
    report.verdict = (
        f"the search did not finish; the store holds {len(trials)} trial(s) of it, and re-running the same "
        "command resumes it without repeating them"
    )
    columns = ("#", "trial", "stage", "status", "s", "reason")
    caption = "every trial recorded for this search (a later run of the same command may have added some)"
    report.tables.append(TableData("recorded trials of this search", columns, rows, caption))


def _trials_table(opt: dict[str, Any]) -> TableData:
    objective = opt["objective"]["name"]
    rows = []
    for i, r in enumerate((r for r in opt["trials"] if r["stage"] != "baseline"), start=1):
        guard = {None: "", True: " ✓", False: " ✗ guard"}[r.get("guard_passed")]
        gain = r.get("gain")
        acc, acc_ci = accuracy_text(r.get("accuracy"), with_ci=r["stage"] != "screen")
        rows.append(
            (
                str(i),
                short_key(r.get("candidate") or r["key"]),
                r["stage"],
                r["status"] + guard,
                f"×{gain[0]:.2f}" if gain else "-",
                (f"{gain[1]:.2f} – {gain[2]:.2f}" if r["stage"] != "screen" else "screen: point only")
                if gain
                else "",
                acc + (f" [{acc_ci}]" if acc_ci else ""),
                f"{r['weights_mib']:.1f}" if r.get("weights_mib") is not None else "-",
                f"{r['seconds']:.0f}" if r.get("seconds") is not None else "-",
            )
        )
    columns = (
        "#",
        "candidate",
        "stage",
        "status",
        f"{objective} gain",
        "95% CI",
        "accuracy Δ",
        "weights MiB",
        "s",
    )
    caption = (
        f"objective: {opt['objective']['what']}; guard: {', '.join(opt['guard'])}; screening judges the "
        "guard on point estimates at twice its limit, finalists and the verification on the 95% CI bound"
    )
    return TableData("trials", columns, tuple(rows), caption)


def _pareto_table(opt: dict[str, Any]) -> TableData:
    front = set(opt["pareto"]["front"])
    judged = {}  # runs stored before the Pareto points carried the guard: take it from the trials
    for t in opt.get("trials") or []:
        if t.get("guard_passed") is not None:
            judged[t.get("candidate") or t.get("key")] = t["guard_passed"]
    rows = tuple(
        (
            short_key(p["key"]),
            f"×{p['gain']:.2f}",
            f"{p['loss']:+.2f}",
            f"{p['weights_mib']:.1f}",
            p.get("stage", "-"),
            {None: "-", True: "yes", False: "no"}[p.get("guard_passed", judged.get(p["key"]))],
        )
        for p in opt["pareto"]["points"]
        if p["key"] in front
    )
    columns = ("candidate", "gain", "accuracy loss", "weights MiB", "measured at", "meets guard")
    return TableData("Pareto front (speed ↑, accuracy loss ↓, weights ↓)", columns, rows)


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
