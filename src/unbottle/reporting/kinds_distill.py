"""The report of a ``distill`` run: verdict, perplexity of every model on the same held-out windows, the
distillation gain with its CI, and the two students' training curves."""

from __future__ import annotations

from unbottle.reporting.parts import Report, Stat, TableData


def describe(report: Report) -> bool:
    doc = report.result
    models, comparisons = doc.get("models"), doc.get("comparisons") or {}
    if not models:
        return False
    gain = comparisons.get("distilled vs no-distill")
    student = doc.get("student") or {}
    report.verdict = (
        f"student with {student.get('layers', '?')} layers: held-out perplexity "
        f"{models['distilled student']['perplexity']:.2f} distilled vs {models['teacher']['perplexity']:.2f} "
        "for the teacher"
    )
    if gain:
        p = gain["pct"]
        report.verdict += (
            f"; distillation changed it by {p['point']:+.1f}% [{p['ci_low']:+.1f}, {p['ci_high']:+.1f}] "
            f"against the same student trained without it ({gain['verdict']})"
        )
        tone = {"better": "good", "worse": "bad"}.get(gain["verdict"], "")
        ci = f"{p['ci_low']:+.1f} – {p['ci_high']:+.1f}"
        report.headline.append(Stat("distillation gain (perplexity)", f"{p['point']:+.1f}%", ci, tone))  # type: ignore[arg-type]
    for name in ("teacher", "distilled student", "no-distill student"):
        if name in models:
            m = models[name]
            ci = f"{m['ci95'][0]:.2f} – {m['ci95'][1]:.2f}"
            report.headline.append(Stat(f"{name} perplexity", f"{m['perplexity']:.2f}", ci))
    rows = tuple(
        (
            name,
            f"{m.get('parameters', 0) / 1e6:.1f}M",
            f"{m['perplexity']:.2f}",
            f"{m['ci95'][0]:.2f} – {m['ci95'][1]:.2f}",
        )  # fmt: skip
        for name, m in models.items()
    )
    corpus = (doc.get("eval") or {}).get("corpus", "held-out text")
    report.tables.append(
        TableData("held-out perplexity", ("model", "parameters", "perplexity", "95% CI"), rows, corpus)
    )
    runs = doc.get("runs") or {}
    report.tables.append(
        TableData(
            "training runs",
            ("run", "steps", "tokens/s (median step)", "final loss"),
            tuple(
                (n, str(r["steps"]), f"{r['tokens_per_s']:.0f}", f"{r['history'][-1]['loss']:.3f}")
                for n, r in runs.items()
                if r.get("history")
            ),
        )
    )
    for name, path in (doc.get("saved") or {}).items():
        report.notes.append(f"{name} student saved to {path}")
    return True
