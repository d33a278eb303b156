"""What an optimisation says in a report (see ``unbottle.reporting.kinds``): the verdict, the winner's
verified gain and accuracy change, speculative decoding on top of it, the trials and the Pareto front."""

from __future__ import annotations

from typing import Any

from unbottle.optimizer.candidates import short_key
from unbottle.reporting.console import fmt
from unbottle.reporting.kinds_work import accuracy_text
from unbottle.reporting.parts import Report, Stat, TableData
from unbottle.reporting.tables import VERDICT_TONE, comparison_tables, ratio_text


def optimize(report: Report) -> bool:
    opt = report.document.get("optimize")
    if not opt:
        _recorded_trials(report)
        return False  # the generic view adds the config

    report.verdict = opt["verdict"]
    _optimize_headline(report, opt)
    report.tables.append(_trials_table(opt))
    report.tables.append(_pareto_table(opt))
    if opt.get("nodes"):
        report.tables.append(_nodes_table(opt))
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
    _speculation_stat(report, opt.get("speculation"))
    tried = [r for r in opt["trials"] if r["stage"] != "baseline"]
    spent = f"{opt.get('elapsed_s', 0):.0f} s of a {opt.get('time_budget_s', 0):.0f} s budget"
    report.headline.append(Stat("trials", str(len(tried)), note=spent))
    if opt.get("workload"):
        report.headline.append(Stat("workload", _workload_text(opt).removeprefix("request: ")))


def _plain_note(plain: list[int] | None) -> str:
    """Where the reference differs from one-token decoding (ONNX Runtime models), say so."""
    if not plain or plain[0] == plain[1]:
        return ""
    return (
        f" (to decoding whose one-token steps round as a pass over a draft does; plain one-token steps "
        f"round otherwise and gave the same tokens on {plain[0]}/{plain[1]})"
    )


def _speculation_stat(report: Report, spec: dict[str, Any] | None) -> None:
    """Speculative decoding on the winner: its gain and acceptance when kept, why not otherwise."""
    if not spec:
        return
    if spec.get("gain") and spec.get("acceptance") is not None:
        g = spec["gain"]
        note = (
            f"{100 * spec['acceptance']:.0f}% of drafted tokens kept, {spec['tokens_per_step']:.2f} tokens "
            f"per pass; greedy tokens identical on {spec['match'][0]}/{spec['match'][1]} held-out prompts"
            + _plain_note(spec.get("plain_match"))
        )
        label, tone = ("kept", "good") if spec["adopted"] else ("declined", "")
        report.headline.append(
            Stat(f"speculative decoding ({label})", f"×{g[0]:.2f}", f"{g[1]:.2f} – {g[2]:.2f}", tone, note)
        )
    else:
        report.headline.append(Stat("speculative decoding", "declined", note=spec["reason"]))


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


def _nodes_table(opt: dict[str, Any]) -> TableData:
    """The cluster's nodes: each one's host, its own baseline rate and A-vs-A noise, and its trials."""
    metric = opt["objective"].get("metric", "")
    ran: dict[str, int] = {}
    for t in opt["trials"]:
        node_id = (t.get("node") or {}).get("node_id")
        if node_id and t["stage"] != "node":
            ran[node_id] = ran.get(node_id, 0) + 1
    rows = []
    for n in opt["nodes"]:
        rate, noise = (n.get("rates") or {}).get(metric), (n.get("screen_noise_floor_pct") or {}).get(metric)
        rows.append(
            (
                str(n.get("node_id", ""))[:12],
                f"{n.get('hostname', '-')}: {n.get('cpu') or '?'}, {n.get('physical_cores', '?')} cores",
                n["status"],
                fmt(rate) if rate is not None else "-",
                f"±{noise:.1f}%" if noise is not None else "-",
                str(ran.get(n.get("node_id", ""), 0)),
            )
        )
    columns = (
        "node",
        "host",
        "baseline",
        f"{metric or 'objective'} (node baseline)",
        "A-vs-A noise",
        "trials",
    )
    caption = "Ray cluster: one trial per node at a time; each A/B ran on one node against its own baseline"
    return TableData("nodes", columns, tuple(rows), caption)


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
