"""``unbottle runs``: list and show what the experiment store holds, and export it to MLflow."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from unbottle.api.exporting import EXPERIMENT, export_runs
from unbottle.cli.common import handle_errors, out, print_json
from unbottle.cli.show import show_run
from unbottle.store import Store

app = typer.Typer(help="List, show and export stored runs.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_(
    limit: Annotated[int, typer.Option(help="Newest N runs.")] = 20,
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind (e.g. bench).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON as the last stdout line.")] = False,
) -> None:
    """List runs, newest first."""
    store = Store()
    runs = store.list_runs(limit=limit, kind=kind)
    table = Table(title=f"runs in {store.path}", title_justify="left", header_style="bold")
    for col in ("id", "kind", "model", "status", "started", "finished"):
        table.add_column(col)
    for r in runs:
        table.add_row(str(r.id), r.kind, r.model, r.effective_status, r.created_at, r.finished_at or "-")
    empty = f"no {kind} runs" if kind else "no runs yet"
    out.print(table if runs else f"{empty} in {store.path}; try `unbottle bench tiny-llama`")
    if json_:
        print_json([{"id": r.id, "kind": r.kind, "model": r.model, "status": r.effective_status,
                     "created_at": r.created_at, "finished_at": r.finished_at} for r in runs])  # fmt: skip


@app.command("show")
@handle_errors
def show(
    ref: Annotated[str, typer.Argument(help="Run id, or 'last'.")] = "last",
    json_: Annotated[bool, typer.Option("--json", help="Print JSON as the last stdout line.")] = False,
) -> None:
    """Show one run; its table is rebuilt from the stored raw samples."""
    show_run(Store(), ref, json_)


@app.command("export")
@handle_errors
def export(
    mlflow: Annotated[
        str,
        typer.Option(
            "--mlflow",
            help="MLflow tracking URI: a database (sqlite:///mlflow.db) or a server (http://HOST:5000).",
        ),
    ],
    run: Annotated[
        list[str] | None, typer.Option("--run", help="Run id or 'last' (repeat it); default: every run.")
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment to write into.")] = EXPERIMENT,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON as the last stdout line.")] = False,
) -> None:
    """Export finished runs to MLflow: configs as params, headline numbers with their 95% intervals as
    metrics, the report, document, raw samples and recipe as artifacts. Runs already exported from this
    store are skipped, so repeating it is safe."""
    doc = export_runs(mlflow, run, experiment=experiment)
    table = Table("run", "MLflow run", "skipped because", title=f"runs exported to {mlflow} ({experiment})")
    for e in doc["exported"] + doc["skipped"]:
        table.add_row(str(e["run"]), e.get("mlflow_run", "-"), e.get("why", ""))
    out.print(table if doc["exported"] or doc["skipped"] else "no runs in the store to export")
    if json_:
        print_json(doc)
