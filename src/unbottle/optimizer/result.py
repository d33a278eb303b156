"""The result of a search: trials table, Pareto front, the verified winner and a plain verdict.

The winner is the verified candidate that met the guard on its CI bound; it is moved to the output
folder and the outcome is ``goal-met``. When none did, the outcome is ``goal-missed``: the verified
candidate with the best objective is reported (under ``winner``, with ``guard_passed`` false and the
missed goal named) but nothing is written to the output folder; with ``save_closest`` it is saved
beside it, as ``<output>.closest``, so it is never taken for a winner. The reported numbers are the
verification's (interleaved A/B on the saved, reloaded model), never the screening's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from unbottle.comparison.document import comparison_document
from unbottle.core.errors import ConfigError, StoreError
from unbottle.core.naming import opt, turn_on
from unbottle.core.paths import check_writable_folder, write_text_atomic
from unbottle.optimizer import judge
from unbottle.optimizer.explain import explain
from unbottle.passes.recipe import RECIPE_FILE, read_recipe
from unbottle.stats import MetricComparison


def _objective(cfg: Any) -> dict[str, Any]:
    spec = cfg.objective_spec()
    return {"name": cfg.objective, "metric": spec[1], "what": spec[4]}


# Beside the saved winner when the search adopted speculative decoding: how to decode it, and why.
SPECULATION_FILE = "speculation.json"


def result_document(
    search: Any,
    base: dict[str, Any],
    screened: list[dict[str, Any]],
    ranked: list[dict[str, Any]],
    verified: list[dict[str, Any]],
    skipped: dict[str, str],
) -> dict[str, Any]:
    cfg = search.cfg
    rows = [_row(search, t, base) for t in search.trials.values()]
    winner = _winner(verified)
    doc: dict[str, Any] = {
        "search_key": search.key,
        "model": cfg.model,
        "objective": _objective(cfg),
        "guard": [str(g) for g in search.goals],
        "workload": {"prompt": cfg.prompt_length, "new": cfg.new_tokens, "batch": cfg.batch_size},
        "baseline": _baseline_summary(base),
        "trials": rows,
        "skipped": skipped,
        "not_tried": search.not_tried,
        "resumed_trials": search.resumed,
        "order_from_profile": search.profile_run,
        "pareto": _pareto(base, rows),
        "winner": None,
        "output": None,
        "elapsed_s": cfg.time_budget_s - search.remaining(),
        "time_budget_s": cfg.time_budget_s,
        "preparation": search.preparation,
        "plan": search.plan.to_dict() if search.plan is not None else None,
        "host_busy": search.host_busy,
        "nodes": search.nodes,  # on a cluster: each node, its own baseline and noise floor
        "circumstances": search.circumstances,
        "restarted_because": search.restarted_because,
        "outcome": "goal-missed",
    }
    if winner is None:
        discard(search)
        doc["verdict"] = _busy_warning(search.host_busy) + _no_winner_verdict(screened, ranked, verified)
        return doc
    compared = winner["trial"]["result"]["comparisons"]
    verification = comparison_document(
        {k: MetricComparison.from_dict(v) for k, v in compared.items()}, search.goals, cfg.model,
        winner["cand"].key,
    )  # fmt: skip
    met = bool(winner["guard"]["passed"])
    output = _save(search, winner, met)
    phases = judge.phases(compared)
    doc.update(
        winner=_winner_summary(search, winner, compared, phases),
        verification=verification,
        output=None if output is None else str(output),
        saved_as=None if output is None else ("winner" if met else "closest"),
        outcome="goal-met" if met else "goal-missed",
        rounds=winner["trial"]["result"]["rounds"],
        verdict=_busy_warning(search.host_busy)
        + _verdict(cfg, winner, verification, phases, output, _selection_accuracy(search, winner)),
    )
    _add_speculation(doc, search.speculation, output if met else None)
    return doc


def _add_speculation(doc: dict[str, Any], spec: dict[str, Any] | None, output: Path | None) -> None:
    """The speculation stage's decision in the document and its verdict; beside a saved winner that
    decodes faster speculatively, how to decode it and what was measured."""
    if spec is None:
        return
    doc["speculation"] = spec
    doc["verdict"] += speculation_line(spec)
    if spec["adopted"] and output is not None:
        public = {k: v for k, v in spec.items() if k not in ("rounds", "comparisons")}
        write_text_atomic(output / SPECULATION_FILE, json.dumps(public, indent=2) + "\n")


def speculation_line(spec: dict[str, Any] | None) -> str:
    """The verdict's sentence on the speculation stage ('' where it did not run)."""
    if spec is None:
        return ""
    if not spec["adopted"]:
        return f"; speculative decoding (prompt lookup) declined: {spec['reason']}"
    match = spec["match"]
    return (
        f"; with speculative decoding (prompt lookup) on top: {spec['reason']}, "
        f"{100 * spec['acceptance']:.0f}% of drafted tokens kept, greedy tokens identical on "
        f"{match[0]}/{match[1]} held-out prompts; decode with --speculative lookup"
    )


def _winner_summary(
    search: Any, winner: dict[str, Any], compared: dict[str, Any], phases: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "key": winner["cand"].key,
        "passes": winner["cand"].to_payload(),
        "gain": winner["gain"],
        "accuracy": judge.accuracy_change(compared),  # on the held-out part of the text
        "selection_accuracy": _selection_accuracy(search, winner),
        "guard_passed": winner["guard"]["passed"],
        "reproduced": _reproduced(search, winner),
        "phases": phases,
    }


def _selection_accuracy(search: Any, winner: dict[str, Any]) -> dict[str, Any] | None:
    """The finalist's accuracy change on the part of the text the search selected on (None when the
    winner had no final measurement)."""
    final = search.trials.get(f"final:{winner['cand'].key}")
    if not final or final["status"] != "ok":
        return None
    return judge.accuracy_change(final["result"]["comparisons"])


def closest_folder(output: Path) -> Path:
    """Where ``save_closest`` puts a candidate that missed the guard: beside the output folder."""
    return output.parent / f"{output.name}.closest"


def _save(search: Any, winner: dict[str, Any], met: bool) -> Path | None:
    """The winner moved into the output folder; a guard-missing candidate only with ``save_closest``,
    beside it; otherwise nothing (its verified copy stays staged, hidden beside the output folder, so
    the same command with ``save_closest`` saves it without verifying again)."""
    if met:
        return publish(search, winner, search.output.resolve())
    if search.save_closest:
        return publish(search, winner, closest_folder(search.output.resolve()))
    return None


def discard(search: Any) -> None:
    """Remove the verification's staged copies of the model (nothing of them is kept)."""
    out = search.output.resolve()
    for staged in out.parent.glob(f".{out.name}.verify-*"):
        shutil.rmtree(staged, ignore_errors=True)


def _winner(verified: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [v for v in verified if v["gain"] is not None]
    passing = [v for v in ok if v["guard"]["passed"]]
    pool = passing or ok
    return max(pool, key=lambda v: v["gain"][0]) if pool else None


def staging_folder(output: Path, key: str) -> Path:
    return output.parent / f".{output.name}.verify-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def winner_folder(search: Any, winner: dict[str, Any]) -> Path:
    """Where the verified winner's folder is now: staged beside the output folder, or, once a run
    published it (a resumed search reads its verification from the store), the output folder."""
    staged = Path(winner["trial"]["result"]["output"])
    out = search.output.resolve()
    return out if not staged.exists() and _published(search, out) else staged


def _published(search: Any, out: Path) -> bool:
    """Whether ``out`` holds a winner this search saved."""
    return (out / RECIPE_FILE).exists() and read_recipe(out).search == search.key


def publish(search: Any, winner: dict[str, Any], out: Path) -> Path:
    """Move the winner's saved folder to ``out`` (once); other verified folders are removed."""
    staged = Path(winner["trial"]["result"]["output"])
    if staged.exists():
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    elif not _published(search, out):
        raise StoreError(
            f"the verified model's folder {staged} is gone and {out} does not hold it; "
            f"re-run with {opt('overwrite')} to verify and save it again"
        )
    discard(search)
    return out


def _reproduced(search: Any, winner: dict[str, Any]) -> dict[str, Any] | None:
    """The reloaded model's perplexity against the finalist's (same windows, same passes)."""
    final = search.trials.get(f"final:{winner['cand'].key}")
    evals = {e["metric"]: e["value"] for e in winner["trial"]["result"]["evals"]}
    if not final or final["status"] != "ok" or "perplexity" not in evals:
        return None
    before = final["result"]["evals"].get("perplexity")
    after = evals["perplexity"]
    return {"final": before, "reloaded": after, "match": abs(after - before) <= 1e-3 * before}


def _verdict(
    cfg: Any,
    winner: dict[str, Any],
    verification: dict[str, Any],
    phases: list[dict[str, Any]],
    output: Path | None,
    selection: dict[str, Any] | None = None,
) -> str:
    """The verdict; ``selection``: the accuracy change on the part of the text the search selected on,
    shown beside the held-out one the guard judged."""
    g = winner["gain"]
    what = cfg.objective_spec()[4]
    head = f"{winner['cand'].key}: {what} ×{g[0]:.2f} [{g[1]:.2f}, {g[2]:.2f}] (95% CI, verified)"
    if g[1] <= 1.0:  # the verification could not tell it from the baseline
        head += "; NOT significantly better than the baseline (the interval includes ×1)"
    goals = "; ".join(r["explanation"] for r in verification["goals"])
    if selection:
        unit, d = {"perplexity": ("%", 2), "embedding_cosine": ("", 4), "pseudo_perplexity": ("%", 2)}.get(
            selection["metric"], (" points", 2)
        )
        goals += (
            f" (held-out text; on the selection text {selection['metric']} {selection['point']:+.{d}f}{unit} "
            f"[{selection['ci_low']:+.{d}f}, {selection['ci_high']:+.{d}f}])"
        )
    regressed = [f"{r['phase']} ({r['what']})" for r in phases if r["regressed"]]
    tail = ""
    if phases:
        tail = "; " + judge.phase_line(phases, cfg.prompt_length, cfg.new_tokens)
    if regressed:
        tail += f"; WARNING: slower than the baseline in {' and '.join(regressed)}"
    if verification["overall"] == "pass":
        return f"{head}; guard met: {goals}{tail}"
    missed = [str(r["goal"]["metric"]) for r in verification["goals"] if not r["passed"]]
    kept = (
        f"saved only as the closest candidate, in {output}"
        if output is not None
        else f"nothing saved ({turn_on('save_closest')} to keep the closest candidate beside the output)"
    )
    return f"GOAL MISSED: {head}; goal missed ({', '.join(missed)}): {goals}; {kept}{tail}"


def _no_winner_verdict(screened, ranked, verified) -> str:
    if verified:
        return "the verification of every candidate failed; see the trials table"
    if not screened:
        return "no candidate applies on this machine (see the skipped ones); baseline reported"
    return "no candidate improved the objective while keeping the accuracy guard; nothing saved"


def _busy_warning(busy: dict[str, Any] | None) -> str:
    """The verdict's opening when the baseline was measured on a busy machine (twice)."""
    if not busy:
        return ""
    return f"WARNING: measured on a busy host ({'; '.join(busy['reasons'])}); {busy['advice']}. "


def _baseline_summary(base: dict[str, Any]) -> dict[str, Any]:
    evals = {e["metric"]: e["value"] for e in base["evals"]["full"]}
    held_out = {e["metric"]: e["value"] for e in base["evals"].get("held_out", [])}
    return {
        "rates": base["rates"],
        "evals": evals,
        "held_out_evals": held_out,
        "weights_mib": base["weights_mib"],
        "peak_rss_mib": base["peak_rss_mib"],
        "threads": base["threads"],
        "screen_noise_pct": base["screen_noise_pct"],
        "host": base.get("host"),
        "model": base["model"],
    }


def _row(search: Any, t: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    row = {k: t.get(k) for k in ("key", "stage", "status", "reason", "seconds", "peak_rss_mib")}
    if t.get("node"):
        row["node"] = t["node"]  # the cluster node it ran on
    if t.get("host_busy"):
        row["host_busy"] = t["host_busy"]  # a disturbed baseline, recorded but never reused
    row["candidate"] = (t.get("candidate") or {}).get("key")
    row["origin"] = (t.get("candidate") or {}).get("origin")
    if t["status"] != "ok" or t["stage"] not in ("screen", "final", "verify"):
        row["explanation"] = [t["reason"]] if t["status"] != "ok" and t.get("reason") else []
        return row
    cmps = t["result"]["comparisons"]
    gain = judge.gain(cmps.get(search.cfg.objective_spec()[1]))
    screen = t["stage"] == "screen"
    guard = judge.guard(search.screen_goals if screen else search.goals, cmps, on_point=screen)
    row.update(
        gain=gain,
        accuracy=judge.accuracy_change(cmps),
        weights_mib=t["result"].get("weights_mib"),
        model_peak_rss_mib=t["result"].get("peak_rss_mib"),
        guard_passed=guard["passed"],
        guard_on=guard.get("on"),
    )
    slower = gain is not None and gain[0] < 1.0
    cand_key = row["candidate"]
    sens = search.sensitivity.get(cand_key) or search.sensitivity.get(
        (t.get("candidate") or {}).get("parent")
    )
    row["explanation"] = explain(t, slower, not guard["passed"], sens, base)
    return row


def _pareto(base: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("gain") and r["status"] == "ok" and r.get("weights_mib") is not None:
            latest[r["candidate"]] = r  # later stages overwrite screening
    points = [{"key": "baseline", "gain": 1.0, "loss": 0.0, "weights_mib": base["weights_mib"]}]
    points += [
        {
            "key": k,
            "gain": r["gain"][0],
            "loss": judge.degradation(r["accuracy"]),
            "weights_mib": r["weights_mib"],
            "stage": r["stage"],
            "guard_passed": r.get("guard_passed"),
        }
        for k, r in latest.items()
    ]
    return {"points": points, "front": judge.pareto_front(points)}


def check_output(output: Path, overwrite: bool, key: str) -> None:
    """Refuse an existing output folder unless --overwrite, or it was saved by this same search."""
    check_writable_folder(output)
    if not output.exists() or overwrite:
        return

    if (output / RECIPE_FILE).exists():
        try:
            if read_recipe(output).search == key:
                return
        except Exception:  # unreadable recipe: treat like any other existing folder
            pass
    raise ConfigError(
        f"output folder {output} exists; choose another {opt('output', flag='-o')} or pass "
        f"{opt('overwrite')} to replace it"
    )
