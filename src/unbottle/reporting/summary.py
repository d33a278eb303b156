"""What a report says about a stored run, whatever it is rendered as (HTML, markdown, JSON).

``build_report`` reads one run with everything it needs (raw measurements, an optimisation's trials,
the runs a comparison compared) and fills a ``Report``: the verdict, the headline numbers with their
confidence intervals, tables of plain strings, notes, and how to reproduce the run. The renderers only
lay it out; the per-kind wording lives in ``unbottle.reporting.kinds``. A run that failed, was
interrupted or is still running gets a report too, saying so above whatever it had recorded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from unbottle.core.errors import StoreError
from unbottle.reporting.documents import run_document
from unbottle.reporting.parts import Report
from unbottle.reporting.reproduce import reproduction
from unbottle.reporting.run_kinds import describe

_STATUS_NOTES = {
    "failed": "this run failed before it finished; what it recorded before failing is shown below",
    "interrupted": "this run was interrupted before it finished; what it recorded is shown below",
    "running": "this run is still running (or its process is on another machine); the report is partial",
    "goal-missed": "the goal was missed: no candidate both improved the objective and kept the accuracy "
    "guard, so no winner was saved; the verdict says what came closest",
}


def build_report(store: Any, ref: int | str) -> Report:
    """Read run ``ref`` (an id or ``"last"``) from ``store`` and say what it found.

    Raises:
        StoreError: no such run; the message names the latest run and `unbottle runs list`.
    """
    run = store.get_run(ref)
    measurements = store.measurements(run.id)
    report = Report(
        run=run,
        status=run.effective_status,
        document=run_document(run, measurements),
        measurements=measurements,
        status_note=_status_note(run),
        reproduce=reproduction(run),
        machine=machine_line(store, run),
    )
    _load_related(store, report)
    describe(report)
    report.notes += [str(n) for n in report.result.get("notes", []) if str(n) not in report.notes]
    return report


def machine_line(store: Any, run: Any) -> str:
    """``Intel Xeon …, 2 physical cores, 260 MiB L3, 12.2 GB/s one-thread read``: where the run's
    numbers were measured (bandwidth only when a one-thread peaks run of that host is stored)."""
    cpu = run.manifest.get("cpu") or {}
    cores = (run.manifest.get("cores") or {}).get("physical")
    llc = cpu.get("llc") or {}
    parts = [cpu.get("model") or "unknown CPU"]
    if cores:
        parts.append(f"{cores} physical cores")
    if llc.get("total_bytes"):
        parts.append(f"{llc['total_bytes'] / 2**20:.0f} MiB L{llc.get('level', '?')}")
    bandwidth = next(
        (
            p.result["bandwidth_gbps"]
            for p in store.list_runs(limit=200, kind="peaks")
            if p.host == run.host and (p.result or {}).get("threads") == 1 and p.status == "complete"
        ),
        None,
    )
    parts.append(
        f"{bandwidth:.1f} GB/s one-thread read" if bandwidth else "one-thread bandwidth not measured here"
    )
    return ", ".join(parts)


def _status_note(run: Any) -> str:
    status = run.effective_status
    note = _STATUS_NOTES.get(status, "")
    if note and run.error:
        note += f". It ended with: {run.error}"
    return note


def _load_related(store: Any, report: Report) -> None:
    """Fetch what the run refers to: an optimisation's trials, a comparison's two runs."""
    run = report.run
    if run.kind == "optimize":
        key = (run.config or {}).get("search_key") or (report.result.get("optimize") or {}).get("search_key")
        if key:
            report.trials = store.trials(key)
    elif run.kind == "compare":
        for ref in (run.config or {}).get("runs") or []:
            try:
                report.related[int(ref)] = store.measurements(int(ref))
            except (StoreError, TypeError, ValueError):
                report.notes.append(
                    f"compared run {ref} is no longer in the store; its samples are not shown"
                )


def manifest_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """The environment manifest as (what, value) rows, in the order a reader checks them."""
    cpu = manifest.get("cpu") or {}
    flags = [f for f, on in (cpu.get("flags") or {}).items() if on]
    cores = manifest.get("cores") or {}
    threads = manifest.get("threads") or {}
    source = manifest.get("unbottle") or {}
    py = manifest.get("python") or {}
    opsys = manifest.get("os") or {}
    rows = [
        (
            "unbottle",
            f"{source.get('version', '?')} (commit {source.get('git_commit') or '-'}"
            + (", uncommitted changes" if source.get("git_dirty") else "")
            + ")",
        ),
        (
            "cpu",
            f"{cpu.get('model') or '?'} ({cpu.get('vendor') or '?'}); torch dispatch "
            f"{cpu.get('torch_capability') or '?'}",
        ),
        ("cpu flags", ", ".join(flags) or "-"),
        ("cores", f"{cores.get('physical', '?')} physical, {cores.get('logical', '?')} logical"),
        ("memory", f"{manifest['memory_total_mib']:,} MiB" if manifest.get("memory_total_mib") else "-"),
        ("gpus", ", ".join(g.get("name", "?") for g in manifest.get("gpus") or []) or "none"),
        ("threads", ", ".join(f"{k}={v}" for k, v in threads.items() if v is not None) or "-"),
        ("os", " ".join(str(opsys.get(k, "")) for k in ("system", "release", "machine")).strip() or "-"),
        ("python", f"{py.get('version', '?')} {py.get('implementation', '')} ({py.get('executable', '?')})"),
        ("seed", str(manifest.get("seed", "-"))),
        ("working folder", str(manifest.get("working_dir") or "not recorded")),
        ("recorded at", str(manifest.get("created_at", "-"))),
    ]
    libraries = manifest.get("libraries") or {}
    rows += [(f"library {k}", v or "not installed") for k, v in libraries.items()]
    return rows


def run_rows(report: Report) -> list[tuple[str, str]]:
    """Identity of the run: kind, model, status, times, model details."""
    run = report.run
    info = report.document.get("model")
    info = info if isinstance(info, dict) else {}
    size = f"{info['n_parameters'] / 1e6:.1f}M params" if info.get("n_parameters") else ""
    details = ", ".join(x for x in (info.get("architecture"), size, info.get("dtype")) if x)
    rows = [
        ("run", f"{run.id} ({run.kind})"),
        ("status", report.status),
        ("model", run.model + (f" — {details}" if details else "")),
        ("started", run.created_at),
        ("finished", run.finished_at or "-"),
    ]
    threads = report.document.get("threads")
    if isinstance(threads, dict) and threads.get("torch_num_threads"):
        rows.append(("torch threads", str(threads["torch_num_threads"])))
    if run.host:
        rows.append(("host", run.host))
    if report.machine:
        rows.append(("machine", report.machine))
    return rows


def report_json(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready document: what it says plus the run's full document."""
    repro = report.reproduce
    return {
        "schema_version": 1,
        "run_id": report.run.id,
        "kind": report.run.kind,
        "model": report.run.model,
        "status": report.status,
        "status_note": report.status_note,
        "verdict": report.verdict,
        "headline": [dataclasses.asdict(s) for s in report.headline],
        "tables": [dataclasses.asdict(t) for t in report.tables],
        "notes": report.notes,
        "reproduce": dataclasses.asdict(repro) if repro else None,
        "document": report.document,
    }
