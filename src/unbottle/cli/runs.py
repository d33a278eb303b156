"""``unbottle runs``: list and show what the experiment store holds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from unbottle.cli.common import handle_errors, out, print_json
from unbottle.cli.show import show_run
from unbottle.store import Store

app = typer.Typer(help="List and show stored runs.", no_args_is_help=True)


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
        print_json(
            [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "model": r.model,
                    "status": r.effective_status,
                    "created_at": r.created_at,
                    "finished_at": r.finished_at,
                }
                for r in runs
            ]
        )


@app.command("show")
@handle_errors
def show(
    ref: Annotated[str, typer.Argument(help="Run id, or 'last'.")] = "last",
    json_: Annotated[bool, typer.Option("--json", help="Print JSON as the last stdout line.")] = False,
) -> None:
    """Show one run; its table is rebuilt from the stored raw samples."""
    show_run(Store(), ref, json_)
